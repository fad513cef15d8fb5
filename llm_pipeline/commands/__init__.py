"""Tool commands of the CLI besides the stages (`llm-pipeline export|generate|lineage ...`).

One module per command, each with `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`, listed in `llm_pipeline.cli.TOOLS`. A command raises PipelineError for
bad input; the CLI prints it as one line (the traceback only with --debug).
"""
