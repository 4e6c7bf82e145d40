"""Datasets in and out of a project: readers and importers per format, preference-pair
selection, streaming exporters, dataset cards and background jobs."""
