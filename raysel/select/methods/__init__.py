"""The registered selection methods, one module each; importing this package registers them all."""
from raysel.select.methods import coreset, geal, probcover, pt4al, random_sampling, typiclust, uncertainty  # noqa: F401
