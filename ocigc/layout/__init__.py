"""An image layout on a storage: the layout, discovery, ``index.json`` updates, the journal, the
reference graph, and the state read from it."""
