"""A random-initialised Llama causal LM saved as a Hugging Face folder, with a byte-level BPE
trained on Shakespeare's training text as its tokenizer.json: a stand-in for a user's
pretrained model where only its shapes matter (the memory measurement of fine-tuning,
docs/results/pretrained/memory/).

    python scripts/experiments/pretrained_folder.py /tmp/llama8 --layers 8 --hidden 256 \
        --heads 8 --intermediate 688 --vocab 1024
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--vocab", type=int, default=1024)
    args = parser.parse_args(argv)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from diffusionblocks.data.text import load_shakespeare
    from diffusionblocks.data.tokens import train_bpe

    corpus = load_shakespeare(val_fraction=0.1)
    tokenizer = train_bpe(corpus.vocab.decode(corpus.train_ids.tolist()), args.vocab)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads,
                         max_position_embeddings=512, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    folder = Path(args.folder)
    LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    print(f"saved {folder}")


if __name__ == "__main__":
    main()
