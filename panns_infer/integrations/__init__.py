"""Adapters that run panns_infer inside other frameworks.

Each adapter lives in its own module and imports its framework lazily, so importing
``panns_infer`` never needs them:

* :mod:`panns_infer.integrations.ray`: :class:`~panns_infer.integrations.ray.PannsPredictor`,
  a callable class for ``ray.data.Dataset.map_batches`` (``pip install 'panns-infer[ray]'``).

>>> import panns_infer.integrations
"""
