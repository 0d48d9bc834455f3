"""``--text`` / ``text=`` finds the bytes as written: ``%``, ``_`` and ``\\`` are no wildcards (SQLite and
PostgreSQL)."""

from __future__ import annotations

from hub.store import NewMessage, SearchQuery


def test_text_search_is_literal_percent_and_underscore_are_no_wildcards(store):
    raws = {
        "P": b"OBX|1|ST|NOTE||100% done",
        "U": b"OBX|1|ST|NOTE||A_B",
        "X": b"OBX|1|ST|NOTE||AxB 100 done",
        "S": b"OBX|1||C:\\TMP",
    }
    store.accept([NewMessage("c", raw, "raw", meta={"control_id": cid}) for cid, raw in raws.items()])

    def found(needle: str) -> list[str]:
        return sorted(r["control_id"] for r in store.search(SearchQuery(text=needle)))

    assert found("%") == ["P"] and found("100%") == ["P"] and found("100% done") == ["P"]
    assert found("_") == ["U"] and found("A_B") == ["U"]
    assert found("\\") == ["S"] and found("%%") == [] and found("A%B") == []
    assert found("done") == ["P", "X"]
