"""How every ``ledger`` command prints: one JSON document with ``--json``, a table otherwise,
and errors as one line on stderr with a non-zero exit code taken from the error tree."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ledger.core.jsonform import to_json_value
from ledger.core.policy.model import REASON_DEFAULT, decided_by
from ledger.core.text import INVISIBLE
from ledger.errors import LedgerError, PolicyError

__all__ = [
    "HelpfulGroup",
    "VERSION",
    "to_jsonable",
    "print_json",
    "print_table",
    "fail",
    "handle_errors",
    "console",
    "json_option",
    "rule_label",
    "policy_label",
    "json_cell",
]

P = ParamSpec("P")
R = TypeVar("R")


# Piped output (scripts, logs) gets a wide console so ids are never cut (a table: as wide as
# its rows, :func:`print_table`); a terminal its own width.
# emoji=False: ":fire:" in a name the ledger holds ("agent:fire:bot") is text, not an emoji.
class _Console(Console):
    """Rich's console, but a closed pipe is the CLI's to handle (exit 141, as ``--json``
    output's is: :func:`handle_errors`), not Rich's exit 1 (an operator's check:
    ``ledger decisions | true`` exited 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


console = _Console(
    highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 200
)
err_console = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def to_jsonable(value: Any) -> Any:
    """Events, decimals, datetimes, enums and tuples as plain JSON values: the ledger's one JSON
    form (:func:`ledger.core.jsonform.to_json_value`), the form of exports, of signed commands
    and of the hash chain, so ``--json`` output can be hashed and checked as they are."""
    return to_json_value(value)


_CONTROLS: Final = {
    code: f"\\x{code:02x}"
    if code < 0x100
    else f"\\u{code:04x}"
    if code < 0x10000
    else f"\\U{code:08x}"
    for code in (
        *(c for c in range(0x20) if c not in (0x09, 0x0A)),  # C0 but tab and newline
        *range(0x7F, 0xA0),  # DEL, C1 (a terminal takes 0x9B as ESC [)
        # Bidi controls, zero-width and other invisible characters, line and paragraph
        # separators (a review: U+2028 broke a cell into a fake row): ledger.core.text's list.
        *(c for low, high in INVISIBLE for c in range(low, high + 1)),
    )
}
"""Characters a terminal acts on rather than shows, as the escapes that show them: text from
the ledger (a resource, a reason, a fact) is the sender's, and ``\x1b[8m`` or U+202E in it
would hide or reorder what an operator or auditor reads."""

MAX_CELL: Final = 2_000
"""Characters of one table cell shown (a crafted export's megabyte-long value would hold the
table renderer for minutes); ``--json`` shows every value whole."""


def plural(n: int, word: str) -> str:
    """``1 problem``, ``4 problems``: counts as every summary line words them."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def printable(text: str, limit: int | None = MAX_CELL, *, one_line: bool = False) -> str:
    """``text`` safe for a terminal: control characters escaped (:data:`_CONTROLS`; with
    ``one_line``, newlines too), and at most ``limit`` characters of it, saying how many there
    were."""
    if limit is not None and len(text) > limit:
        more = "" if one_line else "; --json shows all"
        text = f"{text[:limit]}… ({len(text):,} characters{more})"
    text = text.translate(_CONTROLS)
    return text.replace("\n", "\\n") if one_line else text


class Lines(tuple[str, ...]):
    """A table cell of several lines, each shown on its own (any other cell is one line)."""

    __slots__ = ()


def _cell(value: Any) -> str:
    """One table cell: escaped (:func:`printable`), a newline as ``\\n``, so a sender's text
    cannot start a line of its own (a red team: a resource ``account:a\\ndetermination │
    allow`` added a row to ``ledger decisions``); a :class:`Lines` cell, each line so."""
    if isinstance(value, Lines):
        return "\n".join(_cell(line) for line in value)
    try:
        text = str(to_json_value(value))
    except TypeError:  # not ledger data (a path, a count object): as Python prints it
        text = str(value)
    return printable(text).replace("\n", "\\n")


def print_json(value: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=False))


PIPED_COLUMN_CHARS: Final = 128
"""The widest a column of piped table output grows (the longest id the ledger accepts)."""


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> None:
    """A table of ``rows``; every cell is plain text, never rich markup: a reason, a note or a
    policy document may hold ``[finance]`` or ``[bold]``, and must show as written."""
    table = Table(
        title=None if title is None else Text(title), show_lines=False, header_style="bold"
    )
    cells = [[Text("" if cell is None else _cell(cell)) for cell in row] for row in rows]
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row_cells in cells:
        table.add_row(*row_cells)
    if console.is_terminal:  # a person reading: the terminal's width, long cells folded
        console.print(table)
        return
    # Piped (grep, a log, a script): each column as wide as its widest cell up to
    # PIPED_COLUMN_CHARS, however many columns there are, so an id (at most 128 characters) is
    # never cut in two; a longer cell (a reason, a document) folds rather than widening every
    # row of the table to its length.
    widths = [cell_len(c) for c in columns]
    for row_cells in cells:
        for i, cell in enumerate(row_cells[: len(widths)]):
            longest = max(cell_len(line) for line in cell.plain.split("\n"))
            widths[i] = max(widths[i], min(longest, PIPED_COLUMN_CHARS))
    wide = _Console(
        highlight=False, soft_wrap=True, emoji=False, width=sum(widths) + 3 * len(widths) + 1
    )
    wide.print(table)  # its own console: print(width=…) never goes beyond the console's


def fail(message: str, *, exit_code: int = 1) -> NoReturn:
    """One line on stderr, then exit non-zero (what it quotes made :func:`printable`)."""
    err_console.print(f"error: {printable(message, one_line=True)}", markup=False)
    sys.exit(exit_code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Translate any ``LedgerError`` into one line on stderr and its exit code; an ``OSError``
    the product did not foresee (a file system that cannot be used) into one line and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PolicyError as exc:
            if len(exc.problems) <= 1 or exc.listed:
                fail(f"{exc} [{exc.code}]", exit_code=exc.exit_code)
            for problem in exc.problems:  # every problem, so one edit round fixes them all
                err_console.print(f"error  {printable(str(problem), one_line=True)}", markup=False)
            files = list(dict.fromkeys(p.file for p in exc.problems if p.file))
            where = f"in {', '.join(files)}" if 0 < len(files) <= 3 else "found"
            fail(
                f"{plural(len(exc.problems), 'problem')} {where} [{exc.code}]",
                exit_code=exc.exit_code,
            )
        except LedgerError as exc:
            fail(f"{exc} [{exc.code}]", exit_code=exc.exit_code)
        except BrokenPipeError:
            # The reader went away (`ledger decisions | head`): nothing is wrong here, and
            # nothing more can be written. Quiet, as Unix tools are when their pipe closes.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool its pipe stopped
        except OSError as exc:
            # The machine's fault, not the input's (a $LEDGER_HOME that is a file, a full disk):
            # still one line, naming the path.
            where = f"{exc.filename}: " if exc.filename else ""
            fail(
                f"{where}{exc.strerror or exc} (check $LEDGER_HOME, $XDG_CACHE_HOME and "
                "permissions) [os_error]"
            )

    return wrapper


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
)


def rule_label(rule: str | None, reason_code: str | None) -> str:
    """The ``rule`` cell of a decision table: which rule decided (the core's name for it), or
    ``-`` when none did (the reason code has a column of its own)."""
    if rule is None and reason_code != REASON_DEFAULT:
        return "-"
    return decided_by(rule, reason_code)


def policy_label(policy: str | None, version: int | None, stage: Any = None) -> str:
    """The ``policy`` cell of a decision table: ``refund v2 (canary)``; a policy that decided
    without a version (none deployed, or an error before one ran) shows as just its name."""
    if not policy:
        return "-"
    if version is None:
        return f"{policy} (no version decided)"
    return f"{policy} v{version}" + (f" ({getattr(stage, 'value', stage)})" if stage else "")


def json_cell(value: Any) -> str:
    """A mapping (constraints, a position) as one compact JSON table cell; ``-`` when empty.
    Non-ASCII text as written (a policy owner's walkthrough: ``"cr\\u00e9dit"`` for
    ``"crédit"``); a table cell escapes what a terminal would act on (:func:`printable`)."""
    return json.dumps(to_jsonable(value), ensure_ascii=False) if value else "-"


class VersionType(click.ParamType):
    """A policy version as the CLI prints it or as a number: ``3`` or ``v3``."""

    name = "VERSION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip()
        digits = text[1:] if text[:1] in ("v", "V") else text
        if digits.isascii() and digits.isdigit() and int(digits) >= 1:
            return int(digits)
        self.fail(f"{value!r} is not a version: use its number, e.g. 3 or v3", param, ctx)


VERSION = VersionType()


class HelpfulGroup(click.Group):
    """A command group whose help lists each command with the whole first sentence of its help
    (wrapped), where click cuts it at the terminal's width with "…": "Check policy documents,
    and their NAME.tests.yaml files,..." told a reader little.

    It also says a usage mistake (an unknown option, a value out of range, a
    missing argument) in one line on stderr, ``error: … [usage]``, exit 2, like every other
    error, instead of click's three-line usage block.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, but an unknown command that is another group's, or the top level's
        (`ledger audit export` for `ledger export`), or close to one of this group's, is named."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            name = args[0] if args else ""
            raise click.UsageError(
                f"No such command '{name}'{_elsewhere(ctx, name)}", ctx
            ) from None

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            where = None
            if exc.ctx is None:  # click's option parser raises some without one: this group's
                # own subcommand is the one whose options were being read
                name = ctx.invoked_subcommand
                where = ctx.command_path if name is None else f"{ctx.command_path} {name}"
            raise _one_line(exc, where) from None


def _elsewhere(ctx: click.Context, name: str) -> str:
    """``: did you mean 'ledger export'?``: where the command ``name`` is, when not in the
    group of ``ctx``: the nearest of its own commands, else one of that name in another group."""
    group = ctx.command
    own = group.list_commands(ctx) if isinstance(group, click.Group) else []
    close = difflib.get_close_matches(name[:64], own, n=1)
    if close:
        return f": did you mean '{ctx.command_path} {close[0]}'?"
    root = ctx.find_root()
    top = root.command
    if not isinstance(top, click.Group):
        return ""
    places = [(root.command_path, top)] + [
        (f"{root.command_path} {sub}", cmd)
        for sub in top.list_commands(root)
        if isinstance(cmd := top.get_command(root, sub), click.Group)
    ]
    for path, place in places:
        if path != ctx.command_path and name in place.list_commands(root):
            return f": did you mean '{path} {name}'?"
    return ""


def _one_line(error: click.UsageError, where: str | None = None) -> click.ClickException:
    # A group run without a command shows its help (click's NoArgsIsHelpError): keep that.
    help_instead = getattr(click.exceptions, "NoArgsIsHelpError", ())
    return error if isinstance(error, help_instead) else _UsageLine(error, where)


class _UsageLine(click.ClickException):
    """A click usage error, shown as the CLI's one error line (click shows what it raises)."""

    exit_code = 2

    def __init__(self, error: click.UsageError, where: str | None = None) -> None:
        super().__init__(error.format_message().rstrip("."))
        self.where = where or (error.ctx.command_path if error.ctx is not None else "ledger")

    def show(self, file: Any = None) -> None:
        err_console.print(
            f"error: {self.message} (see '{self.where} --help') [usage]", markup=False
        )
