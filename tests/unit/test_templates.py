"""The template store: loading TOML files, locale fallbacks, strict rendering in a sandbox."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.errors import ConfigurationError, IntentRefused
from dispatcher.templates import RenderedText, TemplateStore

# The example from the contract's "Templates" section, verbatim.
CONTRACT_EXAMPLE = """\
default_locale = "en"
[en]
text = "Hi {{ name }}, order {{ order }} has shipped"
notificationText = "Order shipped"   # optional
androidTitle = "Shop"                # optional, devicesData.android.title
fallbackText = "Order {{ order }} shipped"   # optional, SMS fallback text (GSM 03.38)
[it]
text = "Ciao {{ name }}, l'ordine {{ order }} è stato spedito"
"""

PORTUGUESE = """\
default_locale = "en"
[en]
text = "en"
notificationText = "en note"
androidTitle = "en title"
[pt]
text = "pt"
androidTitle = "pt title"
[pt-BR]
text = "pt-BR"
"""

DATA = {"name": "Ada", "order": 7}


def store_of(tmp_path: Path, files: dict[str, str | bytes]) -> TemplateStore:
    for filename, content in files.items():
        path = tmp_path / filename
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return TemplateStore.load(tmp_path)


def load_error(tmp_path: Path, files: dict[str, str | bytes]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        store_of(tmp_path, files)
    return str(caught.value)


def refusal(store: TemplateStore, name: str, data: dict[str, Any]) -> list[str]:
    with pytest.raises(IntentRefused) as caught:
        store.render(name, None, data)
    return caught.value.problems


# -- the contract's example ------------------------------------------------------------------


def test_contract_example_renders_in_english(tmp_path: Path) -> None:
    """The contract's example file renders every key in its default locale."""
    store = store_of(tmp_path, {"order_shipped.toml": CONTRACT_EXAMPLE})
    assert store.render("order_shipped", "en", DATA) == RenderedText(
        text="Hi Ada, order 7 has shipped",
        notification_text="Order shipped",
        android_title="Shop",
        fallback_text="Order 7 shipped",
    )


def test_contract_example_renders_in_italian(tmp_path: Path) -> None:
    """The `it` table gives the text; the keys it lacks come from the default locale."""
    store = store_of(tmp_path, {"order_shipped.toml": CONTRACT_EXAMPLE})
    assert store.render("order_shipped", "it", DATA) == RenderedText(
        text="Ciao Ada, l'ordine 7 è stato spedito",
        notification_text="Order shipped",
        android_title="Shop",
        fallback_text="Order 7 shipped",
    )


def test_names_lists_every_loaded_template(tmp_path: Path) -> None:
    """`names()` is the set of file names without `.toml`, for intake to check against."""
    store = store_of(
        tmp_path,
        {"order_shipped.toml": CONTRACT_EXAMPLE, "Welcome-2.toml": PORTUGUESE, "notes.txt": "x"},
    )
    assert store.names() == frozenset({"order_shipped", "Welcome-2"})


# -- locale fallback -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("pt-BR", "pt-BR"),
        ("pt_BR", "pt-BR"),
        ("PT-br", "pt-BR"),
        ("pt-PT", "pt"),
        ("pt", "pt"),
        ("pt-BR-x1", "pt-BR"),
        ("de-DE", "en"),
        ("EN", "en"),
        (None, "en"),
    ],
)
def test_locale_falls_back_region_then_language_then_default(
    tmp_path: Path, locale: str | None, text: str
) -> None:
    """A locale falls back `pt-BR` -> `pt` -> default, matching `-`/`_` and any case."""
    store = store_of(tmp_path, {"welcome.toml": PORTUGUESE})
    assert store.render("welcome", locale, {}).text == text


def test_table_names_and_default_locale_match_case_insensitively(tmp_path: Path) -> None:
    """A `[pt_br]` table serves `pt-BR`, and `default_locale = "EN"` finds `[en]`."""
    source = 'default_locale = "EN"\n[en]\ntext = "en"\n[pt_br]\ntext = "br"\n'
    store = store_of(tmp_path, {"welcome.toml": source})
    assert store.render("welcome", "pt-BR", {}).text == "br"
    assert store.render("welcome", "fr", {}).text == "en"


def test_missing_key_falls_back_to_shorter_locale_then_default(tmp_path: Path) -> None:
    """`pt-BR` lacking `androidTitle` takes `pt`'s; lacking `notificationText`, the default's."""
    store = store_of(tmp_path, {"welcome.toml": PORTUGUESE})
    rendered = store.render("welcome", "pt-BR", {})
    assert rendered.android_title == "pt title"
    assert rendered.notification_text == "en note"
    assert rendered.fallback_text is None


# -- load errors -----------------------------------------------------------------------------

GOOD_EN = 'default_locale = "en"\n[en]\ntext = "Hi"\n'


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            {"order_shipped.toml": GOOD_EN + '[it]\ntext = "Ciao {{ name }"\n'},
            "DISPATCHER_TEMPLATES_DIR: order_shipped.toml: [it].text: unexpected '}' (line 1)",
            id="jinja-syntax",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '[it]\ntext = """Ciao,\nordine {{ order }\n"""\n'},
            "a.toml: [it].text: unexpected '}' (line 2)",
            id="jinja-syntax-multiline",
        ),
        pytest.param(
            {"a.toml": 'default_locale = "en"\n[en]\ntext = "unterminated\n'},
            "a.toml: invalid TOML: Illegal character '\\n' (at line 3, column 21)",
            id="toml",
        ),
        pytest.param(
            {"a.toml": '[en]\ntext = "Hi"\n'},
            "a.toml: default_locale: is required",
            id="no-default",
        ),
        pytest.param(
            {"a.toml": 'default_locale = 1\n[en]\ntext = "Hi"\n'},
            "a.toml: default_locale: must be a string",
            id="default-not-string",
        ),
        pytest.param(
            {"a.toml": 'default_locale = "fr"\n[en]\ntext = "Hi"\n'},
            "a.toml: default_locale: 'fr' has no [fr] table",
            id="default-without-table",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '[it]\nnotificationText = "Nota"\n'},
            "a.toml: [it].text: is required",
            id="no-text",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '[it]\ntext = "Ciao"\ntitle = "x"\n'},
            "a.toml: [it].title: unknown key; expected one of text, notificationText, "
            "androidTitle, fallbackText",
            id="unknown-key",
        ),
        pytest.param(
            {"a.toml": 'default_locale = "en"\nlocale = "it"\n[en]\ntext = "Hi"\n'},
            "a.toml: locale: unknown key; a file holds default_locale and tables",
            id="unknown-top-level-key",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + "[it]\ntext = 3\n"},
            "a.toml: [it].text: must be a string, not int",
            id="not-a-string",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '[it]\ntext = "Ciao"\n[it.extra]\ntext = "x"\n'},
            "a.toml: [it].extra: unknown key",
            id="nested-table",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '["e n"]\ntext = "x"\n'},
            "a.toml: [e n]: is not a locale name",
            id="not-a-locale",
        ),
        pytest.param(
            {"a.toml": GOOD_EN + '[pt-BR]\ntext = "x"\n[pt_br]\ntext = "y"\n'},
            "a.toml: [pt_br]: the same locale as [pt-BR]",
            id="duplicate-locale",
        ),
        pytest.param(
            {"order shipped.toml": GOOD_EN},
            "order shipped.toml: the name before .toml must match ^[A-Za-z0-9_-]{1,100}$",
            id="file-name",
        ),
        pytest.param(
            {"a.toml": b'default_locale = "en"\n[en]\ntext = "\xff"\n'},
            "a.toml: is not UTF-8 (line 3)",
            id="not-utf8",
        ),
    ],
)
def test_load_errors_name_file_and_key(
    tmp_path: Path, files: dict[str, str | bytes], message: str
) -> None:
    """Each kind of bad file stops the load with one line naming the setting, file and key."""
    error = load_error(tmp_path, files)
    assert error.startswith("DISPATCHER_TEMPLATES_DIR: ")
    assert message in error
    assert "\n" not in error


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    """A `*.toml` entry that cannot be read (here a folder) is reported by name."""
    (tmp_path / "broken.toml").mkdir()
    error = load_error(tmp_path, {"good.toml": GOOD_EN})
    assert error == "DISPATCHER_TEMPLATES_DIR: broken.toml: cannot be read (Is a directory)"


def test_every_bad_file_is_reported_in_one_line(tmp_path: Path) -> None:
    """Problems in several files are all reported, joined with "; ", in file-name order."""
    error = load_error(
        tmp_path,
        {
            "b.toml": GOOD_EN + "[it]\ntext = 3\n",
            "a.toml": '[en]\ntext = "Hi"\n',
            "ok.toml": GOOD_EN,
        },
    )
    assert error == (
        "DISPATCHER_TEMPLATES_DIR: a.toml: default_locale: is required; "
        "b.toml: [it].text: must be a string, not int"
    )


def test_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    """A folder that does not exist is named in the error."""
    with pytest.raises(ConfigurationError, match=r"^DISPATCHER_TEMPLATES_DIR: .*nope does not"):
        TemplateStore.load(tmp_path / "nope")


def test_file_instead_of_folder_is_a_configuration_error(tmp_path: Path) -> None:
    """A path that is a file, not a folder, is refused."""
    path = tmp_path / "order_shipped.toml"
    path.write_text(GOOD_EN)
    with pytest.raises(ConfigurationError, match=r"order_shipped\.toml is not a folder$"):
        TemplateStore.load(path)


def test_folder_without_templates_is_a_configuration_error(tmp_path: Path) -> None:
    """An empty folder is most likely the wrong one, so it stops the start-up too."""
    with pytest.raises(ConfigurationError, match=r"holds no \*\.toml template$"):
        TemplateStore.load(tmp_path)


# -- render errors ---------------------------------------------------------------------------


def test_unknown_template_is_refused(tmp_path: Path) -> None:
    """Naming a template the folder does not hold refuses the intent on `template`."""
    store = store_of(tmp_path, {"order_shipped.toml": CONTRACT_EXAMPLE})
    assert refusal(store, "nope", DATA) == [
        "template: 'nope' is not defined in DISPATCHER_TEMPLATES_DIR"
    ]


def test_missing_variable_is_refused_naming_it(tmp_path: Path) -> None:
    """StrictUndefined: every key needing an absent variable is reported, naming it."""
    store = store_of(tmp_path, {"order_shipped.toml": CONTRACT_EXAMPLE})
    assert refusal(store, "order_shipped", {"name": "Ada"}) == [
        "data: order_shipped.text needs 'order', which the intent's data does not give",
        "data: order_shipped.fallbackText needs 'order', which the intent's data does not give",
    ]


def test_missing_attribute_is_refused_naming_it(tmp_path: Path) -> None:
    """A missing member of a given variable is refused too, naming the member."""
    store = store_of(tmp_path, {"a.toml": 'default_locale = "en"\n[en]\ntext = "{{ o.city }}"'})
    assert refusal(store, "a", {"o": {"street": "x"}}) == [
        "data: a.text: 'dict object' has no attribute 'city'"
    ]


@pytest.mark.parametrize(
    "expression", ["''.__class__", "name.__class__.__mro__", "name.__init__.__globals__"]
)
def test_sandbox_blocks_dunder_attributes(tmp_path: Path, expression: str) -> None:
    """The sandbox refuses dunder attribute access instead of exposing Python internals."""
    source = f'default_locale = "en"\n[en]\ntext = "{{{{ {expression} }}}}"\n'
    store = store_of(tmp_path, {"a.toml": source})
    [problem] = refusal(store, "a", {"name": "Ada"})
    assert problem.startswith("template: a.text: access to attribute '__")
    assert problem.endswith("is unsafe.")


def test_sandbox_keeps_the_data_unchanged(tmp_path: Path) -> None:
    """A template cannot mutate the data, which render() reuses for every recipient."""
    source = 'default_locale = "en"\n[en]\ntext = "{{ items.append(4) }}"\n'
    store = store_of(tmp_path, {"a.toml": source})
    data = {"items": [1, 2, 3]}
    [problem] = refusal(store, "a", data)
    assert problem.startswith("template: a.text: ")
    assert data == {"items": [1, 2, 3]}


def test_other_render_failures_are_refusals(tmp_path: Path) -> None:
    """A runtime error from the data (a string plus a number) refuses the intent, naming it."""
    source = 'default_locale = "en"\n[en]\ntext = "{{ name + 1 }}"\n'
    store = store_of(tmp_path, {"a.toml": source})
    [problem] = refusal(store, "a", {"name": "Ada"})
    assert problem.startswith("data: a.text cannot be rendered: ")


# -- no escaping -----------------------------------------------------------------------------

VARIABLES = st.dictionaries(
    st.from_regex(r"v_[a-z0-9_]{0,8}", fullmatch=True), st.text(max_size=30), max_size=6
)


@given(VARIABLES)
def test_rendering_substitutes_values_verbatim(variables: dict[str, str]) -> None:
    """Any string values come out exactly as given: no HTML escaping, no re-evaluation."""
    template = " · ".join(f"{name}={{{{ {name} }}}}" for name in variables) or "empty"
    expected = " · ".join(f"{name}={value}" for name, value in variables.items()) or "empty"
    with tempfile.TemporaryDirectory() as folder:
        source = f'default_locale = "en"\n[en]\ntext = "{template}"\n'
        (Path(folder) / "t.toml").write_text(source, encoding="utf-8")
        store = TemplateStore.load(Path(folder))
    assert store.render("t", None, dict(variables)).text == expected


def test_markup_is_not_escaped(tmp_path: Path) -> None:
    """Autoescape is off: push text is not HTML, so `<`, `&` and quotes pass through."""
    store = store_of(tmp_path, {"a.toml": 'default_locale = "en"\n[en]\ntext = "{{ v }}"\n'})
    assert store.render("a", None, {"v": '<b>Tom & "Jerry"\'s</b>'}).text == (
        '<b>Tom & "Jerry"\'s</b>'
    )
