"""Downstream tasks built by ingest: one module per task, `build_tasks` runs the enabled ones."""

from llm_pipeline.data.tasks.base import TaskData, task_card, write_task
from llm_pipeline.data.tasks.build import BUILT_IN, BuiltTasks, TasksConfig, build_tasks, check_leakage
from llm_pipeline.data.tasks.classification import (Example, build_classification, label_distribution,
                                                    top_labels)

__all__ = ["BUILT_IN", "BuiltTasks", "Example", "TaskData", "TasksConfig", "build_classification",
           "build_tasks", "check_leakage", "label_distribution", "task_card", "top_labels", "write_task"]
