"""MLflow tracking: the only package that imports mlflow (`evaluation/`, `stages/` and the flows
go through it), one module per job:

  client       where tracking goes (env vars below), whether it is on, the MLflow client
  faults       tracking failures as one PipelineError line; last calls made without retries
  dead_runs    runs whose process died: found by their owner tags, marked KILLED, replaced
  runs         a stage's run (`stage_run` -> a Tracker), its model registration, pipeline runs
  registry     registered models: versions, aliases, tags, descriptions, model URIs -> folders
  lineage_tags source commit, DVC hashes of the deps and Prefect ids on runs and versions

Defaults keep everything inside the project: a sqlite database `mlflow.db` and an artifact
folder `mlartifacts/`. Override with the usual env vars:

  MLFLOW_TRACKING_URI           e.g. http://127.0.0.1:5000 or sqlite:////abs/path/mlflow.db
  MLFLOW_EXPERIMENT_NAME        default "llm-pipeline"
  LLM_PIPELINE_ARTIFACT_ROOT    artifact folder for a newly created experiment
  LLM_PIPELINE_PARENT_RUN_ID    set by the Prefect flow: stage runs nest under this run
  LLM_PIPELINE_TRACKING=off     disable tracking (e.g. a GPU box without mlflow); without it,
                                a missing or broken mlflow is an error
  LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H  hours after which a RUNNING run opened on another host
                                counts as dead (default 168; 0: never)

On an http(s) URI the MLflow client's retries are bounded (MLFLOW_HTTP_REQUEST_MAX_RETRIES=4,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=30: about 15 s before a call to a
server that went away fails, instead of MLflow's 4 minutes); set those variables to override.
A tracking call that fails during a stage ends it with one PipelineError line naming the URI.

No zombie runs: every run is tagged with its owner (host, pid, process start time); opening a
run marks KILLED the earlier RUNNING runs of the same name whose owner is gone, tagging each
with its successor and the new run with the runs it replaced (`dead_runs.replace_dead_runs`).

Training code never imports this package; stages pass it a logger. In multi-process training
only global rank zero talks to MLflow. This file imports nothing, so a module that needs one
job (e.g. `from llm_pipeline.tracking import registry`) depends on that job's code alone.
"""
