"""Generated fragments that hand-written pages include: model shapes per preset, and the book's status."""

from __future__ import annotations

from albor.config import ModelConfig, load_model_config
from albor.config import presets as model_presets
from albor.verify.book.book import Book
from albor.verify.book.myst import badge, code, esc, percent, ref, table


def plural(n: int, word: str, with_count: bool = False) -> str:
    """``word`` in the singular for 1, else with an s; prefixed with ``n`` when ``with_count``."""
    text = word if n == 1 else f"{word}s"
    return f"{n} {text}" if with_count else text


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def presets() -> str:
    """A table of every model preset shipped in ``albor/config/presets/models/``, smallest first."""
    cfgs = sorted((load_model_config(n) for n in model_presets("models")), key=lambda c: c.n_params())
    rows = [
        [
            code(c.name),
            str(c.n_layers),
            str(c.d_model),
            f"{c.n_heads} / {c.n_kv_heads}",
            str(c.head_dim),
            str(c.d_ff),
            "yes" if c.tie_embeddings else "no",
            _millions(c.n_params()),
            _millions(c.n_params_non_embedding()),
        ]
        for c in cfgs
    ]
    headers = [
        "preset", "layers", "d_model", "heads / kv heads", "head dim", "d_ff", "tied",
        "parameters", "non-embedding",
    ]  # fmt: skip
    vocab = ModelConfig.model_fields["vocab_size"].default
    note = (
        f"Parameters at vocabulary {vocab:,}: a train config's `data.vocab_size` and `data.seq_len` set the"
        " model's vocabulary and context."
    )
    return table(headers, rows) + f"\n{note}\n"


def status(book: Book) -> str:
    """What the book holds and the latest grade, for the front page."""
    rep = book.report
    if rep is None:
        grade = "No falsification report yet."
    else:
        style = (
            "passed"
            if rep["grade"] == "Toyota Standard"
            else "failed"
            if rep["grade"] == "Stop the Line"
            else "warning"
        )
        grade = (
            f"Latest grade: {badge(style, rep['grade'])}, score {percent(rep['score'])} "
            f"({ref('falsification-report', 'report')}, {esc(rep['generated'][:10])})."
        )
    if stale := book.stale_note():
        grade += f" {badge('warning', 'stale')} {stale}"
    cuda = [r for r in book.results if r.device == "cuda"]
    gpu = (
        "GPU results: " + "; ".join(f"{esc(r.card)}, {esc(r.date)}" for r in cuda) + "."
        if cuda
        else "No GPU battery results are committed yet."
    )
    counts = (
        f"{len(book.contracts)} {ref('contracts', plural(len(book.contracts), 'contract'))} with "
        f"{plural(book.n_obligations, 'obligation', True)}; {plural(len(book.gaps), 'gap', True)} in the "
        f"{ref('gap-register', 'gap register')}; {plural(len(book.runs), 'run', True)} in the "
        f"{ref('training-log', 'training log')}."
    )
    return "\n".join([grade, "", counts, "", gpu]) + "\n"
