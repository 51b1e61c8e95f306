"""The ``signalmint`` command: parses arguments and calls the library."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .config import Settings, demo_exposure, load_settings
from .errors import ConfigError, SignalmintError, StoreError
from .registry import Registry

if TYPE_CHECKING:
    from .serve.process import RoleCode
    from .store import Database

__all__ = ["app", "main"]

app = typer.Typer(
    name="signalmint",
    help="Turn a data feed into a paid alert service that runs by itself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="the YAML config file")]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def _fail(error: SignalmintError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(1)


def _load(config: Path) -> Settings:
    try:
        return load_settings(config, registry=Registry.from_entry_points())
    except SignalmintError as exc:
        raise _fail(exc) from None


def _db_url(value: str) -> str:
    return value if "://" in value else f"sqlite:///{Path(value).expanduser().resolve()}"


def print_accounts(console: Console, accounts: list[Any]) -> None:
    """The demo accounts, then each API key whole on its own line (a narrow terminal cuts no key)."""
    table = Table(title="Demo accounts", title_justify="left")
    for column in ("role", "email", "plan"):
        table.add_column(column, overflow="fold")
    for account in accounts:
        table.add_row(account.role, account.email, account.plan or "admin")
    console.print(table)
    console.print("API keys (send as Authorization: Bearer <key>):", highlight=False)
    for account in accounts:
        console.print(f"  {account.role + ':':9}{account.api_key}", soft_wrap=True, highlight=False)


def stop_hint(run_for: float | None) -> str:
    """How the process ends: by itself after ``--for`` seconds, or with Ctrl+C."""
    if run_for is None:
        return "Stop with Ctrl+C."
    seconds = f"{run_for:g}"
    return f"Stops by itself after {seconds} second{'' if seconds == '1' else 's'} (or press Ctrl+C)."


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="port of the web server")] = 8000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    run_for: Annotated[float | None, typer.Option("--for", help="stop after this many seconds", min=0)] = None,
    db: Annotated[
        str | None, typer.Option(help="SQLite file (or database URL) to keep; default: a temporary file")
    ] = None,
    speed: Annotated[float, typer.Option(help="replay this many times faster than the default pace", min=0.01)] = 1.0,
    keys_file: Annotated[
        Path | None, typer.Option(help="also write the demo accounts and their API keys to this JSON file")
    ] = None,
) -> None:
    """Run the demo: four automations (two markets, a shop, a feed), three plans, demo accounts; no keys needed."""
    from .demo.mailcatcher import MailCatcher
    from .demo.seed import demo_settings, new_admin_password, seed_demo
    from .demo.shop import LocalShop
    from .serve.process import ROLES, run_process

    exposure = demo_exposure(demo_settings("sqlite://", host=host, port=port))
    if exposure:  # before anything is created: one line, exit 1
        raise _fail(ConfigError(f"{exposure}; to serve others, run `signalmint run` with a config"))
    _setup_logging("INFO")
    catcher = MailCatcher("127.0.0.1", 0)  # bound now: its port goes into the settings
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="signalmint-demo-")
        db = str(Path(tmp.name) / "demo.db")
    password = new_admin_password()
    shop = LocalShop(speed=speed)  # the shop and news feed two of the demo's automations read
    shop.start()
    settings = demo_settings(
        _db_url(db), host=host, port=port, speed=speed, admin_password=password, smtp_port=catcher.port, shop=shop
    )
    seeded: list[Any] = []

    def prepare(database: Any) -> None:
        seeded.extend(seed_demo(settings, database))
        if keys_file is not None:
            keys_file.write_text(
                json.dumps(
                    {
                        "accounts": [
                            {"role": a.role, "email": a.email, "plan": a.plan, "api_key": a.api_key} for a in seeded
                        ],
                        "admin_password": password,
                    },
                    indent=2,
                )
            )
            keys_file.chmod(0o600)

    def ready(url: str) -> None:
        out.print(f"\n[bold green]signalmint demo[/] is running at [bold]{url}[/]")
        out.print(f"  API:      {url}/api/v1/signals   docs: {url}/docs")
        out.print(f"  Admin:    {url}/admin  (password: {password})")
        out.print(f"  Mail:     {url}/demo/mail  (everything the demo emails, caught on 127.0.0.1:{catcher.port})")
        out.print(f"  Database: {settings.database}")
        print_accounts(out, seeded)
        out.print(
            f"  Try:  curl -H 'Authorization: Bearer {seeded[2].api_key}' {url}/api/v1/signals?limit=3", soft_wrap=True
        )
        if keys_file is not None:
            out.print(f"  Keys written to {keys_file}")
        out.print(f"  {stop_hint(run_for)}\n", highlight=False)

    try:
        run_process(
            settings,
            Registry.from_entry_points(),
            role_code(ROLES, settings),
            migrate=migrate_to_head,
            run_for=run_for,
            on_ready=ready,
            prepare=prepare,
            catcher=catcher,
        )
    except SignalmintError as exc:
        raise _fail(exc) from None
    finally:
        shop.close()
        if tmp is not None:
            tmp.cleanup()


def role_code(roles: frozenset[str], settings: Settings) -> RoleCode:
    """The code of ``roles``, imported for those roles only: a worker never loads the engine nor
    the web app, an engine never the web app (:class:`~signalmint.serve.process.RoleCode`)."""
    from .serve.process import RoleCode, RunBusinessReports, RunWorker, ServeWeb, WireEngine

    engine: WireEngine | None = None
    worker: RunWorker | None = None
    web: ServeWeb | None = None
    business_reports: RunBusinessReports | None = None
    if "engine" in roles:
        from .serve.wiring import wire_engine

        engine = wire_engine
    if "worker" in roles:
        from .delivery.runner import run_worker

        worker = run_worker
        if settings.admin.business_report_on:
            from .billing.business_schedule import run_business_reports

            business_reports = run_business_reports
    if "web" in roles:
        from .serve.web import serve_web

        web = serve_web
    return RoleCode(engine=engine, worker=worker, web=web, business_reports=business_reports)


def migrate_to_head(db: Database) -> None:
    """Bring the store to the code's schema at start-up; Alembic (a quarter second to import)
    loads only when the database is behind, so every start but the first skips it."""
    if not db.at_head():
        from .store.migrate import migrate

        migrate(db)


@app.command()
def run(
    config: ConfigOption = Path("signalmint.yaml"),
    run_for: Annotated[float | None, typer.Option("--for", help="stop after this many seconds", min=0)] = None,
    exit_when_done: Annotated[
        bool, typer.Option(help="exit once every source has ended (a replay or backfill)")
    ] = False,
    role: Annotated[
        list[str] | None,
        typer.Option(help="run only these roles: web, engine, worker (repeat it; default: all three)"),
    ] = None,
) -> None:
    """Run a config: the web app, the engine and the delivery worker, in one process or by role."""
    from .serve.process import ROLES, run_process

    roles = frozenset(role or ROLES)
    if not roles <= ROLES:
        err.print(
            f"[bold red]error:[/] --role takes {', '.join(sorted(ROLES))}, not {', '.join(sorted(roles - ROLES))}"
        )
        raise typer.Exit(1)
    settings = _load(config)
    _setup_logging(settings.log_level)
    try:
        run_process(
            settings,
            Registry.from_entry_points(),
            role_code(roles, settings),
            migrate=migrate_to_head,
            run_for=run_for,
            exit_when_done=exit_when_done,
            on_ready=lambda url: out.print(f"signalmint is running{f' at [bold]{url}[/]' if url else ''}"),
        )
    except SignalmintError as exc:
        raise _fail(exc) from None


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="where to write the example config")] = Path("signalmint.yaml"),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
    template: Annotated[
        str | None, typer.Option("--template", help="write this template (see --list-templates) instead")
    ] = None,
    list_templates: Annotated[
        bool, typer.Option("--list-templates", help="list the templates with a line about each, and exit")
    ] = False,
) -> None:
    """Write a commented example config that passes `signalmint check`."""
    from .templates import get_template, templates

    if list_templates:
        table = Table(title="Templates (signalmint init --template NAME)", title_justify="left")
        for column in ("name", "what it runs"):
            table.add_column(column)
        for t in templates():
            table.add_row(t.name, t.description)
        out.print(table)
        return
    try:
        text = get_template(template).text if template is not None else None
    except SignalmintError as exc:
        raise _fail(exc) from None
    if path.exists() and not force:
        err.print(f"[bold red]error:[/] {path} already exists (use --force to overwrite it)")
        raise typer.Exit(1)
    path.write_text(text or resources.files("signalmint").joinpath("example.yaml").read_text(encoding="utf-8"))
    out.print(f"wrote {path}; check it with [bold]signalmint check -c {path}[/]")


@app.command()
def check(config: ConfigOption = Path("signalmint.yaml")) -> None:
    """Validate a config; on error say which file, line and key, and what to write instead."""
    settings = _load(config)
    table = Table(title=f"{config}: OK", title_justify="left")
    for column in ("automation", "source", "detector", "retention"):
        table.add_column(column)
    for a in settings.automations:
        options = ", ".join(f"{k}={v}" for k, v in a.detector.options.items())
        table.add_row(a.name, a.source.kind, f"{a.detector.kind} {options}".strip(), str(a.retention or "forever"))
    out.print(table)
    _print_business(settings)
    from .billing.fees import price_warnings

    for warning in price_warnings(settings.current_plans(), settings.billing.fees):
        out.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _print_business(settings: Settings) -> None:
    """What the config sells, who takes the money and who runs it, one line each."""
    from .formatting import fmt_price

    plans = [
        f"{p.id} ({fmt_price(p.price, p.currency, p.interval)}{f', {p.trial_days}-day trial' if p.trial_days else ''})"
        for p in settings.plans
    ]
    out.print(f"plans:   {', '.join(plans) if plans else 'none: nothing is for sale'}", highlight=False)
    provider = settings.billing.provider
    mode = {"local": "test mode, no money moves", "stripe": "Stripe", "manual": "recorded by hand"}[provider]
    out.print(f"billing: {provider} ({mode})", highlight=False)
    admin = settings.admin
    ways = [w for w, on in (("emailed link", admin.email), ("password", admin.password or admin.password_hash)) if on]
    out.print(f"admin:   {admin.email or '-'} ({' or '.join(ways) if ways else 'no way to sign in'})", highlight=False)


@app.command()
def migrate(config: ConfigOption = Path("signalmint.yaml")) -> None:
    """Create or upgrade the database schema."""
    from .store import Database
    from .store.migrate import migrate as upgrade

    settings = _load(config)
    db = Database(settings.database)
    try:
        upgrade(db)
        out.print(f"{db.safe_url} is at revision {db.current_revision()}")
    except SignalmintError as exc:
        raise _fail(exc) from None
    finally:
        db.close()


@app.command()
def verify(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="read the database URL from this config")
    ] = None,
    db: Annotated[str | None, typer.Option(help="SQLite file or database URL (instead of --config)")] = None,
    automation: Annotated[str | None, typer.Option(help="only this automation")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    url: Annotated[
        str | None, typer.Option(help="check a running instance's public chain instead (https://...)")
    ] = None,
) -> None:
    """Check the tamper-evident hash chain of every automation's signals (here, or at --url)."""
    from .store import Database, DatabaseError, verify_chain
    from .store.signals import automations_with_signals

    if url is not None:
        from .chain.remote import RemoteError, verify_remote

        try:
            reports = verify_remote(url, automation)
        except RemoteError as exc:
            out.print(f"[red]✗[/] {exc}")
            raise typer.Exit(2) from None
    else:
        if db is None:
            db = _load(config or Path("signalmint.yaml")).database
        try:
            database = Database(_db_url(db), read_only=True)  # reading never creates or changes a database
        except SignalmintError as exc:
            raise _fail(exc) from None
        try:
            names = [automation] if automation else database.read_sync(automations_with_signals)
            reports = [database.read_sync(verify_chain, name) for name in sorted(names)]
        except SignalmintError as exc:
            raise _fail(exc) from None
        except DatabaseError as exc:
            raise _fail(StoreError(f"cannot read {database.safe_url}: {str(exc).splitlines()[0]}")) from None
        finally:
            database.close()
    if as_json:
        print(json.dumps([_report(r) for r in reports], indent=2))
    else:
        for r in reports:
            if r.ok:
                extra = f", {r.opened} revealed payloads match their commitments" if url is not None else ""
                pending = f", {r.unverified} not checkable until revealed" if r.unverified else ""
                out.print(f"[green]✓[/] {r.automation}: {r.checked} signals, chain intact{extra}{pending}")
            else:
                out.print(
                    f"[red]✗[/] {r.automation}: broken at signal #{r.bad_seq}: {r.reason} "
                    f"({r.checked} verified before it)"
                )
        if not reports:
            out.print("no signals to verify")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def _day_or_time(value: str, option: str, *, end: bool) -> datetime:
    """A date (a whole UTC day: ``--to`` includes it) or an ISO 8601 time (UTC if naive)."""
    try:
        if len(value.strip()) == 10:
            day = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _fail(
            ConfigError(f"{option} {value!r}: write a date (2024-01-31) or a time (2024-01-31T14:30Z)")
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def backtest(
    config: ConfigOption = Path("signalmint.yaml"),
    automation: Annotated[str, typer.Option(help="the automation whose detector to run")] = "",
    start: Annotated[str, typer.Option("--from", help="first day (UTC, YYYY-MM-DD) or time")] = "",
    end: Annotated[str, typer.Option("--to", help="last day (included) or time (excluded)")] = "",
    data: Annotated[
        Path | None, typer.Option(help="CSV or Parquet bars (default: the file source's, else the stored bars)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Run an automation's detector over recorded bars: signals, each plan's alerts a day, outcomes (writes nothing)."""
    from rich.progress import Progress

    from .backtest import backtest_outcomes, forecast_plan, load_history, run_backtest
    from .backtest.report import print_backtest
    from .pipeline import build_detector
    from .store import Database
    from .store.bars import bars_until

    settings = _load(config)
    names = [a.name for a in settings.automations]
    if automation not in names:
        raise _fail(ConfigError(f"--automation {automation!r}: {config} has {', '.join(names) or 'no automations'}"))
    if not start or not end:
        raise _fail(ConfigError("give the range to replay: --from 2024-01-02 --to 2024-01-31"))
    begin, finish = _day_or_time(start, "--from", end=False), _day_or_time(end, "--to", end=True)
    if finish <= begin:
        raise _fail(ConfigError(f"--to {end} is not after --from {start}"))
    chosen = settings.automation(automation)

    def read_bars(until: datetime) -> Any:
        database = Database(_db_url(settings.database), read_only=True)  # never writes
        try:
            return database.read_sync(bars_until, automation, until)
        finally:
            database.close()

    try:
        detector, _ = build_detector(chosen, Registry.from_entry_points())
        history = load_history(chosen, finish, data, read_bars)
        with Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task(f"backtest {automation}", total=len(history))
            result = run_backtest(
                detector, history, automation, begin, finish, progress=lambda done, _n: bar.update(task, completed=done)
            )
    except SignalmintError as exc:
        raise _fail(exc) from None
    plans = [p for p in settings.current_plans() if p.covers(automation)]
    forecasts = tuple(forecast_plan(p.expanded(names), result.signals, result.keys, result.days) for p in plans)
    outcomes = backtest_outcomes(chosen, result.signals, history, finish)
    result = dataclasses.replace(result, forecasts=forecasts, outcomes=outcomes)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_backtest(out, result)


report_app = typer.Typer(
    help="Premium reports: render any past period by hand.", no_args_is_help=True, add_completion=False
)
app.add_typer(report_app, name="report")


@report_app.command("render")
def report_render(
    config: ConfigOption = Path("signalmint.yaml"),
    automation: Annotated[str, typer.Option(help="the automation whose report to render")] = "",
    period: Annotated[
        str, typer.Option(help="the period: 2026-11-30 (day), 2026-W48 (week), 2026-11 (month), 2026-11-30T08:00 (run)")
    ] = "",
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the HTML and the PDF into")] = Path("."),
    report: Annotated[str | None, typer.Option(help="the report's name (needed when it has several)")] = None,
) -> None:
    """Render one report for any past period into DIR (HTML, email HTML and PDF); stores nothing."""
    from .config.reports import parse_period
    from .reports.render import standalone
    from .reports.scheduler import find_definition, render_period
    from .store import Database

    settings = _load(config)
    try:
        chosen, spec = find_definition(settings, automation, report)
    except SignalmintError as exc:
        raise _fail(exc) from None
    if not period:
        raise _fail(ConfigError(f"give the period to render: --period {spec.period_example}"))
    try:
        span = parse_period(spec, period)
    except ValueError as exc:
        raise _fail(ConfigError(f"--period: {exc}")) from None
    now = datetime.now(UTC)
    if span.end > now:
        ends = span.end.astimezone(spec.zone).strftime("%Y-%m-%d %H:%M")
        raise _fail(ConfigError(f"--period {period} has not ended yet (it ends {ends} {spec.timezone})"))
    try:
        database = Database(_db_url(settings.database), read_only=True)  # rendering by hand never writes
    except SignalmintError as exc:
        raise _fail(exc) from None
    try:
        rendered = database.read_sync(render_period, settings, chosen, spec, span, now)
    except SignalmintError as exc:
        raise _fail(exc) from None
    finally:
        database.close()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / f"{rendered.filename}{suffix}" for suffix in (".html", ".email.html", ".pdf")]
        written[0].write_text(standalone(rendered, site_title=settings.web.title), encoding="utf-8")
        written[1].write_text(rendered.email_html, encoding="utf-8")
        written[2].write_bytes(rendered.pdf)
    except OSError as exc:
        raise _fail(StoreError(f"cannot write into {out_dir}: {exc}")) from None
    out.print(
        f"{rendered.title} · {rendered.period_key}: {rendered.signal_count} signals, "
        f"{len(rendered.top)} top signals, PDF {len(rendered.pdf):,} bytes",
        highlight=False,
    )
    for path in written:
        out.print(f"  wrote {path}", highlight=False, soft_wrap=True)


@app.command("business-report")
def business_report(
    config: ConfigOption = Path("signalmint.yaml"),
    week: Annotated[str | None, typer.Option(help="the ISO week, e.g. 2026-W48 (default: the last full week)")] = None,
    send: Annotated[bool, typer.Option("--send", help="email it to admin.email now (even if sent before)")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the HTML email to this file")] = None,
) -> None:
    """Preview the operator's weekly business report (text), write its HTML, or send it."""
    import asyncio

    from .billing.business_email import render_html, render_text
    from .billing.business_report import compute, parse_week, week_of
    from .billing.business_schedule import send_week
    from .store import Database

    settings = _load(config)
    tz = settings.admin.business_report.tz
    now = datetime.now(UTC)
    if send and out_file is not None:
        raise _fail(ConfigError("give --send or --out, not both"))
    try:
        chosen = parse_week(week, tz) if week else week_of(now, tz).previous()
        database = Database(_db_url(settings.database), read_only=not send)
    except SignalmintError as exc:
        raise _fail(exc) from None
    try:
        if send:
            if not settings.admin.email:
                raise _fail(ConfigError(f"{config}: set admin.email, the address the report goes to"))
            sent = asyncio.run(send_week(settings, database, chosen, now, force=True))
            if sent.status != "sent":
                raise _fail(ConfigError(f"{chosen.label} was not sent: {sent.error}"))
            out.print(f"{chosen.label} sent to {settings.admin.email} ({sent.message_id})", highlight=False)
            return
        figures = database.read_sync(compute, settings, chosen, now)
    except SignalmintError as exc:
        raise _fail(exc) from None
    finally:
        database.close()
    if out_file is not None:
        out_file.write_text(render_html(figures, settings.web.title, settings.base_url), encoding="utf-8")
        out.print(f"{chosen.label} written to {out_file}", highlight=False)
    else:
        print(render_text(figures, settings.web.title, settings.base_url), end="")


def _report(r: object) -> dict[str, object]:
    names = ("automation", "checked", "ok", "bad_seq", "reason", "unverified", "opened")
    return {name: getattr(r, name) for name in names}


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
