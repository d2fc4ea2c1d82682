"""How well an attribute transfer worked: a proxy a user can check.

A bag-of-words logistic-regression classifier (scikit-learn's ``CountVectorizer`` on whitespace
tokens + ``LogisticRegression``) is trained on the labelled training sentences. For each source
label a and target b, the sentences of label a are encoded (posterior mean), shifted by
s · v_{a→b} and decoded; the table reports, per scale s:

- ``transfer_acc``: the fraction of outputs the classifier labels b (s = 0: the plain reconstructions);
- ``bleu``: corpus BLEU (sacrebleu, whitespace tokens) of the outputs against their sources: content kept;
- ``classifier_acc``: the classifier's accuracy on the untouched evaluation sentences (its own ceiling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from textvae.errors import TextVAEError
from textvae.latent.attributes import AttributeVectors
from textvae.latent.codes import posterior_means


def train_classifier(pairs: Sequence[tuple[str, str]], seed: int = 0):
    """A fitted sklearn pipeline: bag of words → logistic regression; ``predict(sentences)`` gives labels."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = {label for label, _ in pairs}
    if len(labels) < 2:
        raise TextVAEError(f"the classifier needs at least two labels, got {sorted(labels)}")
    classifier = make_pipeline(
        CountVectorizer(token_pattern=r"\S+", lowercase=False), LogisticRegression(max_iter=1000, random_state=seed)
    )
    return classifier.fit([sentence for _, sentence in pairs], [label for label, _ in pairs])


def transfer_table(
    model,
    vectors: AttributeVectors,
    classifier,
    pairs: Sequence[tuple[str, str]],
    scales: Sequence[float],
    max_sentences: int | None = None,
    seed: int = 0,
    **settings,
) -> list[dict]:
    """One row per (source label, target label, scale) over the evaluation ``pairs``; ``settings`` decode."""
    rows = []
    for source in vectors.labels:
        sentences = [sentence for label, sentence in pairs if label == source][:max_sentences]
        if not sentences:
            continue
        original_acc = float((classifier.predict(sentences) == source).mean())
        means = posterior_means(model, sentences)  # (N, D)
        for target in vectors.labels:
            if target == source:
                continue
            vector = vectors.vector(f"{source}_to_{target}").to(means.device)  # (D,)
            for scale in scales:
                outputs = model.generate(means + scale * vector, seed=seed, **settings)
                row = {"source": source, "target": target, "scale": float(scale), "sentences": len(sentences)}
                rows.append(row | _scores(classifier, sentences, outputs, target) | {"classifier_acc": original_acc})
    return rows


def _scores(classifier, sentences: list[str], outputs: list[str], target: str) -> dict:
    from sacrebleu import corpus_bleu

    return {
        "transfer_acc": float((classifier.predict(outputs) == target).mean()),
        "bleu": corpus_bleu(outputs, [sentences], tokenize="none", force=True).score,  # whitespace tokens
        "examples": [{"source": s, "output": o} for s, o in zip(sentences[:3], outputs[:3], strict=True)],
    }


def table_markdown(rows: Sequence[dict]) -> str:
    lines = [
        "| source → target | scale | sentences | classifier acc. on sources | transferred acc. | BLEU to source |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['source']} → {row['target']} | {row['scale']:g} | {row['sentences']} | "
            f"{row['classifier_acc']:.3f} | {row['transfer_acc']:.3f} | {row['bleu']:.1f} |"
        )
    return "\n".join(lines)


def vector_norms(vectors: AttributeVectors) -> dict[str, float]:
    return {name: float(torch.linalg.vector_norm(vectors.vector(name))) for name in vectors.names}
