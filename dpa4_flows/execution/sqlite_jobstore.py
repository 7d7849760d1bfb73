"""EmbeddedJobStore: a jobflow ``JobStore`` whose documents and ``data`` blobs commit together.

jobflow's ``JobStore.update`` writes the job document, then each blob to its additional store,
as separate writes: a job killed in between leaves a document pointing at a missing blob (or a
blob no document references). Here every ``SQLiteStore`` in the same file as the docs store
shares the docs store's connection, and ``update`` / ``remove_docs`` run in one sqlite
transaction (the stores' own writes nest as savepoints): all of a job's rows, or none.
"""

from __future__ import annotations

from jobflow import JobStore

from dpa4_flows.execution.sqlite_store import SQLiteStore


class EmbeddedJobStore(JobStore):
    """``JobStore`` over ``SQLiteStore``s in one file, writing each job atomically (module docstring)."""

    def _same_file(self) -> list[SQLiteStore]:
        docs = self.docs_store
        if not isinstance(docs, SQLiteStore):
            return []
        return [s for s in self.additional_stores.values()
                if isinstance(s, SQLiteStore) and s.database_path == docs.database_path]

    def connect(self, force_reset: bool = False) -> None:
        self.docs_store.connect(force_reset=force_reset)
        shared = self._same_file()
        for store in self.additional_stores.values():
            if any(store is s for s in shared):
                store.connect_shared(self.docs_store)
            else:
                store.connect(force_reset=force_reset)

    def close(self) -> None:
        for store in self.additional_stores.values():
            store.close()  # shared stores only let go of the docs store's connection
        self.docs_store.close()

    def _transaction(self):
        if not isinstance(self.docs_store, SQLiteStore):
            raise TypeError("EmbeddedJobStore needs a SQLiteStore as docs_store")
        return self.docs_store._write()

    def update(self, docs, key=None, save=None) -> None:
        """jobflow's ``update`` (documents and their blobs) in one transaction."""
        with self._transaction():
            super().update(docs, key=key, save=save)

    def remove_docs(self, criteria: dict) -> None:
        """jobflow's ``remove_docs`` (documents and their blobs) in one transaction."""
        with self._transaction():
            super().remove_docs(criteria)
