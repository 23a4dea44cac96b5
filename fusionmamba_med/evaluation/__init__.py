"""Evaluation of fusion methods on 2D pairs: the metric table (Markdown + CSV) and a side-by-side figure."""

from fusionmamba_med.evaluation.pair_evaluation import (
    EVAL_TASKS,
    evaluate_methods,
    fuse_pair,
    items_by_folder,
    network_method,
    score_network,
    summarise,
    write_report,
)

__all__ = ["EVAL_TASKS", "evaluate_methods", "fuse_pair", "items_by_folder", "network_method", "score_network",
           "summarise", "write_report"]
