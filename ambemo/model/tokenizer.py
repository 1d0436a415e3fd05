"""The tiny model's tokenizer: a byte-level BPE trained offline, shipped as one small JSON file.

The real Qwen2-Audio tokenizer cannot be downloaded here, so ``model=tiny`` uses a byte-level
BPE (the same kind as Qwen's) with Qwen's special tokens, trained on the prompt, the class names
and the built-in corpus's reasoning texts. Byte-level means any text still encodes; training on
our texts only makes them short. Rebuild the shipped file with::

    python -m ambemo.model.tokenizer

which trains deterministically on a freshly generated small corpus and rewrites
``ambemo/model/assets/tiny_tokenizer.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TINY_TOKENIZER_FILE = Path(__file__).parent / "assets" / "tiny_tokenizer.json"
#: Qwen's ChatML and audio special tokens, in Qwen's order.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` (deterministic for the same texts in the same order)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tiny_tokenizer(
    path: Path = TINY_TOKENIZER_FILE, extra_special_tokens: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """The shipped tiny tokenizer wrapped for transformers (pad = <|endoftext|>, eos = <|im_end|>).

    ``extra_special_tokens`` are appended after the shipped vocabulary (ids ``len(shipped)``,
    ``len(shipped) + 1``, ...), for a backbone family whose config names special tokens the
    shipped file lacks (e.g. Qwen2.5-Omni's image/video placeholders). Appending at load time
    leaves the shipped file, and every existing id, unchanged.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it with `python -m ambemo.model.tokenizer`")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="right"
    )
    missing = [t for t in extra_special_tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return tokenizer


def _training_texts(corpus_dir: Path) -> list[str]:
    import json

    from ambemo.data.labels import CREMA_D_CLASSES, IEMOCAP_CLASSES
    from ambemo.data.synthetic import generate_corpus
    from ambemo.model.prompts import chat_prompt

    manifest = generate_corpus(corpus_dir / "corpus", seed=12345, n_train=400, n_val=0, n_test=1, workers=2)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    texts = []
    for classes in (CREMA_D_CLASSES, IEMOCAP_CLASSES):
        names = " ".join(f" {c}" for c in classes)
        for use_cot in (True, False):
            texts += [chat_prompt(classes, row["transcript"], use_cot) + " " + names for row in rows[:20]]
    texts += [row["cot"] for row in rows]
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the tiny model's shipped tokenizer.")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=TINY_TOKENIZER_FILE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(_training_texts(Path(tmp)), args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
