"""Evaluation helpers the tasks share (they never import the tasks: each states what it needs of
one as a Protocol):

- :mod:`.text` -- diversity and repetition of generated text, perplexity under a judge;
- :mod:`.classification` -- per-block diagnostics of a DiffusionBlocks classifier;
- :mod:`.fid` -- the Fréchet distance of generated images in the feature space of the shipped
  Fashion-MNIST evaluator (or of Inception-v3), and the evaluator's training recipe;
- :mod:`.png` -- a dependency-free PNG writer for sample grids.

``diffusionblocks.fid`` and ``diffusionblocks.png`` re-export the last two from their old place."""
