"""Evaluation helpers the tasks share: text metrics (:mod:`.text`) and the Frechet distance of
generated images in a classifier's feature space (:mod:`.fid`)."""
