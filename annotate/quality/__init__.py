"""Annotation quality: agreement statistics, per-annotator bias and speed, gold pairs and pauses."""
