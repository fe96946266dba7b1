"""``rvsl-search``: search your own footage. Folders of vehicle crops are embedded into an
index on disk (:mod:`~rvsl.search.build`, :mod:`~rvsl.search.index`), queried with filters
and a "no match" distance (:mod:`~rvsl.search.query`, :mod:`~rvsl.search.calibrate`), and the
results shown on a static page (:mod:`~rvsl.search.page`). Nothing heavy is imported here."""
