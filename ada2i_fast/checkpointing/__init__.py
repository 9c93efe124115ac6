"""The model's files, below the model: safe torch files (``torch_file``), model folders in Hugging
Face's layout (``pretrained``) and the authors' checkpoints (``reference_checkpoint``). A training
run's own files (best.pt, last.pt, its state and folder) are in :mod:`ada2i_fast.training`."""
