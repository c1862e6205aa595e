"""The notes page: notes per ``user@host``, the notice board, and reloading the servers."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from hmonitor.web.auth import client_label
from hmonitor.web.notes import NoteError
from hmonitor.web.settings import SettingsError
from hmonitor.web.state import get_state


def add_routes(bp: Blueprint) -> None:
    @bp.get("/notes")
    def notes() -> ResponseReturnValue:
        state = get_state()
        edit_user = request.args.get("user", "")
        edit_host = request.args.get("host", "")
        editing = state.notes.get(edit_user, edit_host) if edit_user and edit_host else None
        return render_template(
            "notes.html",
            notes=state.notes.notes(),
            editing=editing,
            form_user=edit_user,
            form_host=edit_host,
            host_names=[h.name for h in state.poller.hosts()],
            settings_path=state.settings.path,
        )

    @bp.post("/notes")
    def save_note() -> ResponseReturnValue:
        f = request.form
        try:
            note = get_state().notes.put(
                f.get("user", ""), f.get("host", ""), f.get("note", ""), by=client_label()
            )
        except NoteError as err:
            flash(f"Note not saved: {err}.", "error")
            return redirect(url_for("pages.notes", user=f.get("user", ""),
                                    host=f.get("host", "")))
        flash(f"Saved the note for {note.user}@{note.host}.", "ok")
        return redirect(url_for("pages.notes"))

    @bp.post("/notes/delete")
    def delete_note() -> ResponseReturnValue:
        user, host = request.form.get("user", ""), request.form.get("host", "")
        if get_state().notes.delete(user, host):
            flash(f"Removed the note for {user}@{host}.", "ok")
        else:
            flash(f"There was no note for {user}@{host}.", "error")
        return redirect(url_for("pages.notes"))

    @bp.get("/notice")
    def notice_form() -> ResponseReturnValue:
        return redirect(url_for("pages.notes", _anchor="notice-form"))

    @bp.post("/notice")
    def save_notice() -> ResponseReturnValue:
        try:
            saved = get_state().notes.set_notice(request.form.get("notice", ""),
                                                 by=client_label())
        except NoteError as err:
            flash(f"Notice not saved: {err}.", "error")
        else:
            flash("Notice saved." if saved.text else "Notice cleared.", "ok")
        return redirect(url_for("pages.notes", _anchor="notice-form"))

    @bp.post("/reload")
    def reload_servers() -> ResponseReturnValue:
        try:
            result = get_state().reload_servers()
        except SettingsError as err:
            flash(f"settings.py not reloaded: {err}", "error")
        else:
            flash(f"Reloaded servers: {result.summary()}.", "ok")
        return redirect(url_for("pages.notes", _anchor="admin"))
