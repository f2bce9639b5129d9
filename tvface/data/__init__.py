"""Data: TV video -> single-character face sequences (report sections 4.1-4.2), and the Datasets.

``tvface.data.collect`` holds the collection pipeline (one step per module); ``tvface.data.dataset``
the loaders every training issue uses; ``tvface.data.layout`` the on-disk format. No model code
except the frozen preprocessing networks the collection runs (BiSeNet face parsing).
"""
