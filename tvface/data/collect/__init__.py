"""The collection pipeline: decode -> shots -> detect -> identity -> sequences -> crop, landmarks,
masks -> dataset + manifest + QC report. Each step is a function in its own module and a
``tvface collect`` sub-command; :mod:`tvface.data.collect.pipeline` chains them resumably."""
