"""A training run: its setup from the flags, the trainer's epochs, one step, the optimizer, the eval
loop, the processes of a distributed run, the metric log and its sinks, and the run's files
(checkpoints, resume state, the run folder)."""
