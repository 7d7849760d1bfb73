"""Running jobflow flows and keeping their results; nothing here knows DPA4 (or the rest of dpa4_flows).

- ``stores``: JobStore factories (``embedded_store``, ``mongo_store``, ``memory_store``), ``configured_store`` (what
  jobflow.yaml declares) and ``check_persistent``.
- ``sqlite_store``: ``SQLiteStore``, the indexed embedded maggma Store. Filters are evaluated by ``mongo_match``
  (MongoDB semantics in Python; ``mongo_values`` orders values, ``mongo_regex`` bounds ``$regex``) after an indexed
  prefilter from ``sqlite_query`` (bound parameters only); documents are stored losslessly by ``mongo_json``;
  connections, read-only opening and write transactions in ``sqlite_db``; ``sqlite_jobstore.EmbeddedJobStore``
  writes a job's document and its ``data`` blobs in one transaction.
- ``runner``: ``run_resumable``, over ``state`` (the bookkeeping database of a workdir), ``workdir`` (the
  persisted flow: ``load_flow``) and ``fingerprint`` (``flow_fingerprint``: is this the same flow?).
- ``results``: a flow's jobs as a DataFrame, one candidate's record.
- ``distributed``: FireWorks and jobflow-remote.
"""
