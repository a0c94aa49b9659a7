"""What runs write and read: checkpoints, the exported model folder, the metrics logger and samples page."""
