"""Datasets in and out of a project: readers and importers per format, preference-pair
selection, streaming exporters, dataset cards, background jobs, and their pages, API
endpoints and tasks."""
