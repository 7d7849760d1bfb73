"""Running jobflow flows and keeping their results; nothing here knows DPA4 (or the rest of dpa4_flows).

- ``stores``: JobStore factories (``embedded_store``, ``mongo_store``, ``memory_store``) and ``check_persistent``.
- ``sqlite_store``: ``SQLiteStore``, the indexed embedded maggma Store; its MongoDB-filter compiler is
  ``sqlite_query`` (``compile_filter``), its connections and write transactions ``sqlite_db``.
- ``runner``: ``run_resumable``, over ``state`` (the bookkeeping database of a workdir), ``workdir`` (the
  persisted flow: ``load_flow``) and ``fingerprint`` (``flow_fingerprint``: is this the same flow?).
- ``results``: a flow's jobs as a DataFrame, one candidate's record.
- ``distributed``: FireWorks and jobflow-remote.
"""
