"""What every command runs on: the config mechanism (``config``: typed dataclass fields; ``cli``: click
options and exit codes generated from them), errors, file locks, progress, training logs (``metrics``),
torchrun/FSDP setup (``distributed``), hub ids and atomic file writes (``files``)."""
