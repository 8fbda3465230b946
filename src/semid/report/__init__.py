"""The RQ-VAE diagnosis (``make report``, ``python -m semid.report``; semid.report.cli says what it
runs and writes). One module per part: ablation (the fits), template (the prose), answer (facts
from the numbers, worded), recalls (the key points from the grid in main, else DVC experiments), render (tables, plot,
reports/rqvae.md), collapse_section (the collapse map's section), saved_ablation
(reports/rqvae_ablation.json), cli (the command)."""

from semid.report.ablation import AblationRow, Variant, ablation_variants, recipe_remedies, run_ablation
from semid.report.answer import (
    CONVERGED_EPOCHS,
    AnswerFacts,
    answer,
    answer_facts,
    ceiling_facts,
    render_answer,
    render_ceiling,
)
from semid.report.cli import experiment_embeddings, main
from semid.report.collapse_section import collapse_map_section, replace_section
from semid.report.render import ablation_table, recall_table, render_report
from semid.report.template import parse_snippets, say, snippets

__all__ = [
    "CONVERGED_EPOCHS", "AblationRow", "AnswerFacts", "Variant", "ablation_table", "ablation_variants", "answer",
    "answer_facts", "ceiling_facts", "collapse_map_section", "experiment_embeddings", "main", "parse_snippets",
    "recall_table", "recipe_remedies", "render_answer", "render_ceiling", "render_report", "replace_section",
    "run_ablation", "say", "snippets",
]
