"""The notes and notice store: SQLite in the data dir, surviving restarts."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmonitor.web.notes import DB_NAME, MAX_NOTE, MAX_USER, NoteError, NotesStore


@pytest.fixture
def store(tmp_path: Path) -> NotesStore:
    return NotesStore.in_dir(tmp_path)


def test_notes_are_added_listed_replaced_and_removed(store: NotesStore) -> None:
    store.put("bob", "gpu02", "until Friday", by="admin")
    store.put("alice", "gpu01", "training", by="alice")
    assert [(n.user, n.host, n.note) for n in store.notes()] == [
        ("alice", "gpu01", "training"), ("bob", "gpu02", "until Friday")]

    store.put(" alice ", "gpu01", "  done soon  ", by="carol")
    note = store.get("alice", "gpu01")
    assert note is not None
    assert (note.note, note.updated_by) == ("done soon", "carol")
    assert len(store.notes()) == 2, "same user@host replaces, never duplicates"
    assert [n.user for n in store.notes(host="gpu02")] == ["bob"]

    assert store.delete("alice", "gpu01") is True
    assert store.delete("alice", "gpu01") is False
    assert store.get("alice", "gpu01") is None


@pytest.mark.parametrize(
    ("user", "host", "note", "message"),
    [
        ("", "gpu01", "x", "user is required"),
        ("alice", "  ", "x", "host is required"),
        ("alice", "gpu01", "   ", "note is empty"),
        ("al\nice", "gpu01", "x", "one line of visible characters"),
        # Bidi override, zero-width space, line separator: "gpu01" that is not gpu01.
        ("alice", "gpu\u202e10", "x", r"visible characters \(it has U\+202E\)"),
        ("ali\u200bce", "gpu01", "x", r"U\+200B"),
        ("alice", "gpu\u202801", "x", "visible characters"),
        ("alice", "gpu01", "read \u202eevil", r"control character \(U\+202E\)"),
        ("alice", "gpu01", "bell\x07", "control character"),
        ("alice", "gpu01", "x" * (MAX_NOTE + 1), "longer than"),
    ],
)
def test_bad_notes_are_refused_with_a_reason(
    store: NotesStore, user: str, host: str, note: str, message: str
) -> None:
    with pytest.raises(NoteError, match=message):
        store.put(user, host, note)
    assert store.notes() == []


def test_text_is_stored_as_typed(store: NotesStore) -> None:
    # Escaping is the page's job; the store must not mangle what people wrote.
    text = "<script>alert(1)</script> & 'quotes' \"too\"\nsecond line"
    store.put("eve", "gpu01", text)
    note = store.get("eve", "gpu01")
    assert note is not None and note.note == text


def test_notice_is_empty_until_set_and_can_be_cleared(store: NotesStore) -> None:
    assert store.notice().text == ""
    assert store.notice().updated_at is None
    saved = store.set_notice(" maintenance on Monday ", by="admin")
    assert store.notice().text == "maintenance on Monday"
    assert store.notice().updated_by == "admin"
    assert store.notice().updated_at == saved.updated_at
    store.set_notice("")
    assert store.notice().text == ""


def test_notes_and_notice_survive_a_restart(tmp_path: Path) -> None:
    first = NotesStore.in_dir(tmp_path)
    first.put("alice", "gpu01", "keep GPU 3 free")
    first.set_notice("hello")
    first.close()

    again = NotesStore.in_dir(tmp_path)
    assert [n.note for n in again.notes()] == ["keep GPU 3 free"]
    assert again.notice().text == "hello"
    assert (tmp_path / DB_NAME).is_file()


def test_database_uses_wal(tmp_path: Path) -> None:
    NotesStore.in_dir(tmp_path).put("a", "b", "c")
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_writers_lose_nothing(store: NotesStore) -> None:
    # waitress serves requests from several threads at once.
    def write(i: int) -> None:
        for j in range(20):
            store.put(f"user{i}", f"host{j}", f"note {i} {j}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.notes()) == 80


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> NotesStore:
    return NotesStore.in_dir(tmp_path_factory.mktemp("prop"))


@settings(max_examples=300, deadline=None)
@given(user=st.text(max_size=80), note=st.text(max_size=60))
def test_a_stored_key_is_one_trimmed_line_of_visible_characters(
    shared_store: NotesStore, user: str, note: str
) -> None:
    try:
        saved = shared_store.put(user, "gpu01", note)
    except NoteError:
        return  # refused with a reason: nothing else may escape
    assert saved.user == user.strip() and saved.user.isprintable()
    assert 0 < len(saved.user) <= MAX_USER
    assert saved.note and not any(ch in saved.note for ch in "\u202a\u202b\u202c\u202d\u202e")


def test_emoji_and_other_scripts_are_fine(store: NotesStore) -> None:
    note = store.put("李雷", "gpu01", "训练到周五 👩\u200d🔬 — متى؟")
    assert store.get("李雷", "gpu01") == note
