"""What the labeled part contributes: labels and `--labeled` files, predictions, class posteriors and the linear probe."""
