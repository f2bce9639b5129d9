"""The book: every notebook runs with papermill on the smoke profile and the site builds with -W."""
from __future__ import annotations

import pytest

from tvface import book

NOTEBOOKS = book.notebook_sources()
pytestmark = pytest.mark.notebooks


def test_every_notebook_is_in_the_toc():
    assert NOTEBOOKS, "no notebooks found"
    assert book.missing_from_toc() == []


def test_every_notebook_has_one_parameters_cell():
    import jupytext

    for src in NOTEBOOKS:
        nb = jupytext.read(src)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{src}: {len(tagged)} parameters cells"
        assert "profile" in book._parameter_names(nb), f"{src}: no `profile` parameter"


def test_grid_chapters_declare_overrides():
    """`tvface book batch` passes config overrides to these chapters through an `overrides` parameter."""
    import jupytext

    for stem in ("06_deca_baseline", "07_temporal_training", "08_qualitative"):
        src = book.NOTEBOOK_DIR / f"{stem}.py"
        assert "overrides" in book._parameter_names(jupytext.read(src), src), f"{src}: no `overrides` parameter"


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    return tmp_path_factory.mktemp("book")


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_on_smoke(source, smoke_book, tmp_path, monkeypatch):
    monkeypatch.setenv("TVFACE_DATA", str(smoke_book / "data"))
    run = book.execute_notebook(source, smoke_book / "book" / "generated", profile="smoke")
    assert run.output.exists()


def test_book_builds_with_warnings_as_errors(smoke_book):
    generated = smoke_book / "book" / "generated"
    if len(list(generated.glob("*.ipynb"))) != len(NOTEBOOKS):
        pytest.fail("some notebooks did not execute (see the failures above)")
    book.stage_book(smoke_book, generated)
    html = book.build_book(smoke_book)
    assert (html / "index.html").exists()
    for src in NOTEBOOKS:
        assert (html / "book" / "generated" / f"{src.stem}.html").exists()
