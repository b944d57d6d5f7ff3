"""HTML fragments of the dashboard: what the page script fetches with the token and inserts.

Every function takes figures (``figures.py``) or inventory objects and returns HTML in which
each value went through ``h()``. Action forms carry ``data-role``: the script hides those the
signed-in role may not use, and the API refuses them anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from inventory import model
from inventory.dashboard import figures
from inventory.dashboard.figures import StorageRow
from inventory.dashboard.markup import (
    DASH,
    attr_json,
    duration,
    filter_box,
    h,
    pct,
    rate,
    size,
    slot,
    table,
    td,
    time_tag,
)
from inventory.inventory import Inventory
from inventory.objects import CopyRequest, Cycle, Operation

OUTCOMES = ("delete", "keep", "safety", "ignore")


def item_link(inv: Inventory, oid: int, text: str | None = None) -> str:
    row = inv.row_of_oid(oid)
    label = text if text is not None else (inv.i_name[row] if row is not None
                                           else model.format_uuid(oid))
    return f'<a href="/dashboard/items/{h(model.format_uuid(oid))}">{h(label)}</a>'


def status_badge(status: str) -> str:
    return f'<span class="badge status-{h(status)}">{h(status)}</span>'


# ------------------------------------------------------------------------------- storages

def occupancy_bar(row: StorageRow) -> str:
    """The occupancy bar: used (solid), projected with pending operations (hatched outline),
    Detox's high and low watermarks (vertical marks) with their values written under it.
    Widths and offsets are data attributes the script applies: the page's Content-Security-
    Policy allows no inline style (inventory/server/crosssite.py)."""
    occ, proj = row.occupancy, row.projected
    if occ is None:
        return '<span class="muted">no capacity</span>'

    def width(x: float) -> str:
        return f"{min(max(x, 0.0), 1.0) * 100:.2f}%"

    over = " over" if row.high is not None and occ > row.high else ""
    parts = [f'<span class="fill{over}" data-width="{width(occ)}"></span>']
    if proj is not None and abs(proj - occ) > 1e-9:
        parts.append(f'<span class="proj" data-width="{width(proj)}"></span>')
    legend = [f'<span class="occ">{h(pct(occ))}</span>']
    for kind, value in (("high", row.high), ("low", row.low)):
        if value is not None:
            parts.append(f'<span class="wm {kind}" data-left="{width(value)}" '
                         f'title="{kind} watermark {h(pct(value))}"></span>')
            legend.append(f'<span class="wm-{kind}" data-value="{value}">'
                          f'{kind} {h(pct(value))}</span>')
    if proj is not None and abs(proj - occ) > 1e-9:
        legend.append(f'<span class="projected">→ {h(pct(proj))}</span>')
    label = f"occupancy {pct(occ)}" + "".join(
        f", {k} watermark {pct(v)}" for k, v in (("high", row.high), ("low", row.low))
        if v is not None)
    return (f'<div class="bar" role="img" aria-label="{h(label)}" data-occupancy="{occ:.6f}">'
            f'{"".join(parts)}</div><div class="legend">{" ".join(legend)}</div>')


def drain_cell(row: StorageRow) -> str:
    d = row.drain
    if d is None:
        return ""
    progress = "" if d.progress is None else (
        f'<div class="bar drain" role="img" aria-label="drained {h(pct(d.progress))}">'
        f'<span class="fill" data-width="{d.progress * 100:.2f}%"></span></div>')
    eta = "done" if d.left == 0 else (
        f"ETA {duration(d.eta)} at {rate(d.rate)}" if d.eta is not None
        else "ETA unknown: no fall in occupancy measured yet")
    return (f'{progress}<div class="legend drain-info"><span class="left">{h(size(d.left))} '
            f'left</span> <span class="eta">{h(eta)}</span></div>')


def reliability_cell(row: StorageRow) -> str:
    rel = row.storage.reliability
    text = (f"{pct(rel.success_rate)} of {rel.copies_ok + rel.copies_failed} copies"
            if rel.success_rate is not None else "no copies yet")
    extra = f", {rate(rel.throughput)}" if rel.throughput is not None else ""
    return h(text + extra)


def storage_actions(row: StorageRow) -> str:
    """Drain (or bring back online) through ``PATCH /v1/storages/{name}``: operators only."""
    s = row.storage
    url = f"/v1/storages/{quote(s.name, safe='')}"
    if s.status == "online":
        return (f'<form class="action" data-role="operator" data-method="PATCH" '
                f'data-url="{h(url)}" data-body="{attr_json({"status": "draining"})}" '
                f'data-confirm="Drain {h(s.name)}? Dealer copies its data away and Detox '
                f'empties it."><button type="submit">Drain</button></form>')
    if s.status == "draining":
        return (f'<form class="action" data-role="operator" data-method="PATCH" '
                f'data-url="{h(url)}" data-body="{attr_json({"status": "online"})}" '
                f'data-confirm="Stop draining {h(s.name)}?">'
                f'<button type="submit">Stop drain</button></form>')
    return ""


def storages(rows: list[StorageRow], *, actions: bool, watermark_cycle: int | None) -> str:
    headers = ["Storage", "Status", "Occupancy", "Used", "Capacity", "Projected",
               "Pending in / out", "Reliability", "Drain"] + (["Actions"] if actions else [])
    out = []
    for r in rows:
        s = r.storage
        cells = [
            td(f"<strong>{h(s.name)}</strong><br><span class=muted>{h(s.kind)} · "
               f"{h(model.PHASES[s.phase])}</span>", s.name),
            td(status_badge(s.status), s.status),
            td(occupancy_bar(r), r.occupancy, "occupancy"),
            td(h(size(s.used)), s.used),
            td(h(size(s.capacity)), s.capacity),
            td(h(pct(r.projected)), r.projected, "projected"),
            td(f"{h(size(r.incoming))} / {h(size(r.outgoing))}", r.incoming - r.outgoing),
            td(reliability_cell(r), s.reliability.success_rate),
            td(drain_cell(r), r.drain.left if r.drain else -1),
        ]
        if actions:
            cells.append(td(storage_actions(r)))
        out.append(f'<tr data-storage="{h(s.name)}">{"".join(cells)}</tr>')
    note = (f'<p class="muted">Watermarks from the policy of Detox cycle '
            f'<a href="/dashboard/cycles/{watermark_cycle}">#{watermark_cycle}</a>; '
            f'projected occupancy counts queued and running copies and deletions.</p>'
            if watermark_cycle is not None else
            '<p class="muted">No Detox cycle yet: no watermarks to draw.</p>')
    return table("storages-table", headers, out, empty="No storage registered.") + note


def copy_request_form(inv: Inventory, item: str | None = None) -> str:
    """Ask Dealer for a copy (``POST /v1/requests``): producers and operators."""
    options = "".join(f'<option value="{h(s.name)}">{h(s.name)}</option>'
                      for s in sorted(inv.storages.values(), key=lambda s: s.name)
                      if s.status == "online")
    item_field = (f'<input type="hidden" name="item" value="{h(item)}">' if item else
                  '<label>Item <input name="item" required placeholder="name or oid"></label>')
    return (f'<form class="action request" data-role="producer" data-method="POST" '
            f'data-url="/v1/requests"><fieldset><legend>Request a copy</legend>{item_field}'
            f'<label>Storage <select name="storage" required>{options}</select></label>'
            f'<label>Pin until <input name="pin_until" type="datetime-local"></label>'
            f'<label>Comment <input name="comment"></label>'
            f'<button type="submit">Request copy</button></fieldset></form>')


def requests_table(inv: Inventory, requests: Iterable[CopyRequest], table_id: str) -> str:
    rows = []
    for r in requests:
        storage = inv.storages.get(r.storage_id)
        rows.append("<tr>" + "".join((
            td(h(r.id), r.id), td(item_link(inv, r.oid)),
            td(h(storage.name if storage else r.storage_id)), td(h(r.state)),
            td(time_tag(r.pin_until), r.pin_until or 0), td(h(r.requester)),
            td(time_tag(r.created), r.created), td(h(r.comment)))) + "</tr>")
    return table(table_id, ["#", "Item", "Storage", "State", "Pinned until", "Requester",
                            "Created", "Comment"], rows, empty="No copy request.")


# ------------------------------------------------------------------------------- operations

def operation_rows(inv: Inventory, ops: Iterable[Operation], *, item: bool = True) -> list[str]:
    out = []
    for op in ops:
        source = inv.storages.get(op.source_id) if op.source_id is not None else None
        target = inv.storages.get(op.target_id)
        cells = [td(h(op.id), op.id), td(h(op.kind))]
        if item:
            cells.append(td(item_link(inv, op.oid)))
        cells += [
            td(h(source.name if source else None)), td(h(target.name if target else None)),
            td(h(figures.item_size(inv, op.oid) and size(figures.item_size(inv, op.oid))),
               figures.item_size(inv, op.oid)),
            td(f'<span class="badge op-{h(op.state)}">{h(op.state)}</span>', op.state),
            td(h(op.origin)), td(h(op.attempts), op.attempts),
            td(time_tag(op.updated), op.updated),
            td(h(op.last_error) if op.last_error else "", cls="error"),
        ]
        out.append(f'<tr data-op="{op.id}">{"".join(cells)}</tr>')
    return out


OP_HEADERS = ["#", "Kind", "Item", "Source", "Target", "Size", "State", "Origin", "Attempts",
              "Updated", "Error"]


def operations(inv: Inventory, state: str, listed: list | None = None) -> str:
    """Counts by kind and state, per-storage throughput and the operations in ``state``
    (``listed``: those the caller found, with the finished ones only the database keeps)."""
    counts = figures.operation_counts(inv)
    states = ("queued", "running", "done", "failed", "cancelled")
    count_rows = [
        f"<tr><th scope=row>{h(kind)}</th>"
        + "".join(td(h(by_state.get(s, 0)), by_state.get(s, 0)) for s in states) + "</tr>"
        for kind, by_state in sorted(counts.items())]
    activity = figures.storage_activity(inv)
    storage_rows = []
    for s in sorted(inv.storages.values(), key=lambda s: s.name):
        rel, act = s.reliability, activity.get(s.id, {"queued": 0, "running": 0, "failed": 0})
        storage_rows.append(f'<tr data-storage="{h(s.name)}">' + "".join((
            td(h(s.name)), td(h(act["queued"]), act["queued"]),
            td(h(act["running"]), act["running"]), td(h(act["failed"]), act["failed"]),
            td(f"{rel.copies_ok} / {rel.copies_failed}", rel.copies_ok),
            td(h(pct(rel.success_rate))), td(h(rate(rel.throughput)), rel.throughput or 0,
                                             "throughput"),
            td(h(size(rel.bytes_copied)), rel.bytes_copied),
            td(f"{rel.deletions_ok} / {rel.deletions_failed}", rel.deletions_ok),
            td(time_tag(rel.unreachable_until or None), rel.unreachable_until))) + "</tr>")
    wanted = states if state == "all" else tuple(state.split(","))
    if listed is None:
        listed = figures.recent_operations(inv, wanted)
    picker = "".join(
        f'<option value="{h(v)}"{" selected" if v == state else ""}>{h(text)}</option>'
        for v, text in (("queued,running,failed", "queued, running and failed"),
                        ("queued", "queued"), ("running", "running"), ("failed", "failed"),
                        ("done", "done"), ("all", "all")))
    return (
        '<section><h2>By state</h2>'
        + table("op-counts", ["Kind", *states], count_rows, empty="No operation yet.")
        + '</section><section><h2>Per storage (as target)</h2>'
        + table("op-storages", ["Storage", "Queued", "Running", "Failed", "Copies ok / failed",
                                "Success", "Throughput", "Bytes copied",
                                "Deletions ok / failed", "Unreachable until"], storage_rows,
                empty="No storage.")
        + '</section><section><h2>Operations</h2>'
        f'<form class="refine" data-slot="operations"><label>Show <select name="state">'
        f'{picker}</select></label></form>{filter_box("ops-table")}'
        + table("ops-table", OP_HEADERS, operation_rows(inv, listed),
                empty="No operation in this state.")
        + (f'<p class="muted">The newest {len(listed)} shown.</p>' if len(listed) >= 500 else "")
        + "</section>")


# ------------------------------------------------------------------------------- cycles

def cycle_line(cycle: Cycle) -> str:
    """One line saying what a cycle did."""
    s = cycle.summary
    applied = s.get("applied") if isinstance(s.get("applied"), dict) else {}
    if cycle.kind == "detox":
        text = (f"{applied.get('deletions', s.get('deletions', 0))} deletions queued "
                f"({size(applied.get('deleted_bytes', s.get('deleted_bytes', 0)))}), "
                f"{applied.get('expirations', s.get('expirations', 0))} expirations")
        if s.get("unsatisfied"):
            text += f"; still over: {', '.join(map(str, s['unsatisfied']))}"
        return text
    if cycle.kind == "dealer":
        return (f"{applied.get('copies', s.get('copies', 0))} copies queued "
                f"({size(applied.get('bytes', s.get('bytes', 0)))}), "
                f"{s.get('requests_done', 0)} requests done")
    if cycle.kind == "consistency":
        storage = s.get("storage") if isinstance(s.get("storage"), Mapping) else {}
        counts = s.get("counts") if isinstance(s.get("counts"), Mapping) else {}
        found = ", ".join(f"{_tally(counts.get(k))[0] or 0} {k.replace('_', ' ')}"
                          for k in CONSISTENCY_CLASSES if k != "ok")
        verdict = f"; not fixed: {s['safety']}" if s.get("safety") else ""
        return f"{storage.get('name', '?')}: {found}{verdict}"
    scalars = [f"{k}: {v}" for k, v in s.items() if isinstance(v, int | float | str)]
    return ", ".join(scalars[:6])


def cycles(inv: Inventory, limit: int = 200) -> str:
    rows = []
    for c in sorted(inv.cycles.values(), key=lambda c: -c.id)[:limit]:
        took = None if c.ended is None else c.ended - c.started
        policy = c.summary.get("policy") if isinstance(c.summary.get("policy"), dict) else {}
        rows.append(f'<tr data-cycle="{c.id}">' + "".join((
            td(f'<a href="/dashboard/cycles/{c.id}">#{c.id}</a>', c.id), td(h(c.kind)),
            td(time_tag(c.started), c.started), td(h(duration(took)), took or 0),
            td(h(policy.get("file") or policy.get("name"))), td(h(cycle_line(c))))) + "</tr>")
    return filter_box("cycles-table") + table(
        "cycles-table", ["Cycle", "Kind", "Started", "Took", "Policy", "Summary"], rows,
        empty="No cycle has run yet.")


def summary_dl(value: Mapping[str, Any]) -> str:
    """Any summary as nested definition lists: whatever a cycle kind records is shown."""
    parts = []
    for key, v in value.items():
        if isinstance(v, Mapping):
            inner = summary_dl(v) if v else DASH
        elif isinstance(v, list):
            inner = ("<ul>" + "".join(
                f"<li>{summary_dl(x) if isinstance(x, Mapping) else h(x)}</li>" for x in v)
                + "</ul>") if v else DASH
        else:
            inner = h(v)
        parts.append(f"<dt>{h(key)}</dt><dd>{inner}</dd>")
    return f'<dl class="summary">{"".join(parts)}</dl>'


def detox_storages(summary: Mapping[str, Any]) -> str:
    rows = []
    for s in summary.get("storages", ()):
        if not isinstance(s, Mapping):
            continue
        protecting = ", ".join(f"{p.get('rule')} ({size(p.get('bytes'))})"
                               for p in s.get("top_protecting_rules", ()) if isinstance(p, Mapping))
        rows.append(f'<tr data-storage="{h(s.get("name"))}">' + "".join((
            td(h(s.get("name"))), td(h(pct(s.get("occupancy_before"))), s.get("occupancy_before")),
            td(h(pct(s.get("occupancy_after"))), s.get("occupancy_after")),
            td(h("yes" if s.get("triggered") else "no")),
            td(h("not judged" if s.get("judged") is False
                 else "yes" if s.get("satisfied") else "no")),
            td(f"{h(s.get('deleted_replicas'))} ({h(size(s.get('deleted_bytes')))})",
               s.get("deleted_bytes")),
            td(h(protecting)))) + "</tr>")
    return table("cycle-storages", ["Storage", "Before", "After (planned)", "Triggered",
                                    "Satisfied", "Deleted", "Most protected by"], rows,
                 empty="No storage judged.")


def by_rule(summary: Mapping[str, Any]) -> str:
    rows = []
    entries = summary.get("by_rule") or summary.get("by_reason") or {}
    for rule, entry in sorted(entries.items()):
        if not isinstance(entry, Mapping):
            continue
        count = entry.get("replicas", entry.get("copies"))
        rows.append("<tr>" + td(h(rule)) + td(h(count), count)
                    + td(h(size(entry.get("bytes"))), entry.get("bytes")) + "</tr>")
    return table("cycle-rules", ["Rule", "Replicas", "Bytes"], rows, empty="No rule decided.")


def cycle(inv: Inventory, c: Cycle) -> str:
    """A cycle: what it did, per storage and per rule, its decisions (filterable) and the
    policy text it ran with."""
    s = c.summary
    took = None if c.ended is None else c.ended - c.started
    head = (f'<p class="facts"><span>{h(c.kind)} cycle #{c.id}</span> · started '
            f'{time_tag(c.started)} · took {h(duration(took))}</p>'
            f'<p class="cycle-line">{h(cycle_line(c))}</p>')
    storage_names = sorted({str(x.get("name")) for x in s.get("storages", ())
                            if isinstance(x, Mapping) and x.get("name")} |
                           set(inv.storage_by_name))
    rules = sorted((s.get("by_rule") or {}).keys())
    decisions_form = (
        '<form class="refine" data-slot="decisions">'
        '<label>Storage <select name="storage"><option value="">any</option>'
        + "".join(f'<option value="{h(n)}">{h(n)}</option>' for n in storage_names)
        + '</select></label><label>Rule <select name="rule"><option value="">any</option>'
        + "".join(f'<option value="{h(r)}">{h(r)}</option>' for r in rules)
        + '</select></label><label>Outcome <select name="outcome"><option value="">any</option>'
        + "".join(f'<option value="{o}">{o}</option>' for o in OUTCOMES)
        + "</select></label></form>")
    body = [head]
    if c.kind == "detox":
        body += ["<section><h2>Storages</h2>", detox_storages(s), "</section>"]
    if s.get("by_rule") or s.get("by_reason"):
        body += ["<section><h2>By rule</h2>", by_rule(s), "</section>"]
    body += ['<section><h2>Summary</h2><details><summary>Everything the cycle recorded'
             '</summary>', summary_dl(s), "</details></section>"]
    if c.kind == "detox":
        body += ["<section><h2>Decisions</h2>", decisions_form,
                 slot("decisions", f"/dashboard/fragments/cycles/{c.id}/decisions"),
                 "</section>"]
    if c.policy:
        body += ['<section><h2>Policy</h2><pre class="policy">', h(c.policy), "</pre></section>"]
    return "".join(body)


def decisions(inv: Inventory, cycle_id: int, records: list[dict[str, Any]],
              next_cursor: int | None, query: Mapping[str, str]) -> str:
    rows = []
    for d in records:
        uid = d.get("uid")
        oid = None
        if isinstance(uid, str):
            try:
                oid = model.parse_uuid(uid) & ~0xFFFF
            except ValueError:
                oid = None
        item = item_link(inv, oid) if oid is not None else h(uid)
        rows.append(f'<tr data-outcome="{h(d.get("outcome"))}">' + "".join((
            td(item), td(h(d.get("storage"))),
            td(f'<span class="badge outcome-{h(d.get("outcome"))}">{h(d.get("outcome"))}</span>',
               d.get("outcome")),
            td(h(d.get("rule"))), td(h(d.get("line")), d.get("line")),
            td(h(size(d.get("size"))), d.get("size")))) + "</tr>")
    more = ""
    if next_cursor is not None:
        params = urlencode({**query, "cursor": str(next_cursor)})
        more = (f'<p><a class="more" data-more="decisions" '
                f'href="/dashboard/fragments/cycles/{cycle_id}/decisions?{h(params)}">'
                f"Next {len(records)} decisions</a></p>")
    return table("decisions-table", ["Item", "Storage", "Outcome", "Rule", "Line", "Size"],
                 rows, empty="No decision matches.") + more


# ------------------------------------------------------------------------------- items

def item_rows(inv: Inventory, rows: Iterable[int]) -> str:
    out = []
    for row in rows:
        oid = inv.i_oid[row]
        replicas = list(inv.replica_rows_of_item(row))
        expire = inv.i_expire[row]
        out.append(f'<tr data-oid="{h(model.format_uuid(oid))}">' + "".join((
            td(item_link(inv, oid), inv.i_name[row]),
            td(h(inv.i_version[row]), inv.i_version[row]),
            td(h(model.ITEM_STATES[inv.i_state[row]])),
            td(f"{h(model.PHASES[inv.current_phase(row)])} / "
               f"{h(model.PHASES[inv.i_target[row]])}"),
            td(h(size(inv.i_size[row] if inv.i_size[row] >= 0 else None)), inv.i_size[row]),
            td(h(len(replicas)), len(replicas)),
            td(time_tag(expire if expire == expire else None),
               expire if expire == expire else 0))) + "</tr>")
    return table("items-table", ["Name", "Version", "State", "Phase (current / target)",
                                 "Size", "Replicas", "Expires"], out,
                 empty="No item matches.")


def item_search(inv: Inventory, pattern: str, rows: list[int], limit: int) -> str:
    if not pattern:
        return '<p class="muted">Type a name or a glob (<code>obs/*.ms</code>) above.</p>'
    note = (f'<p class="muted">The first {limit} matches shown; narrow the pattern.</p>'
            if len(rows) >= limit else f'<p class="muted">{len(rows)} found.</p>')
    return item_rows(inv, rows) + note


def item(inv: Inventory, row: int, item_decisions: list[tuple[Cycle, dict[str, Any]]]) -> str:
    """An item: its state and phase, expiry, replicas, copy requests, operations and the
    decisions recent Detox cycles took about its replicas."""
    oid = inv.i_oid[row]
    expire = inv.i_expire[row]
    size_value = inv.container_size(row) if inv.i_type[row] == model.CONTAINER \
        else inv.i_size[row]
    facts = (
        ("Name", h(inv.i_name[row])), ("Version", h(inv.i_version[row])),
        ("oid", f"<code>{h(model.format_uuid(oid))}</code>"),
        ("Type", h(model.ITEM_TYPES[inv.i_type[row]])),
        ("State", f'<span class="badge state-{h(model.ITEM_STATES[inv.i_state[row]])}" '
                  f'id="item-state">{h(model.ITEM_STATES[inv.i_state[row]])}</span>'),
        ("Phase", f'<span id="item-phase">{h(model.PHASES[inv.current_phase(row)])}</span> '
                  f'(target {h(model.PHASES[inv.i_target[row]])})'),
        ("Size", h(size(size_value if size_value >= 0 else None))),
        ("Expires", time_tag(expire if expire == expire else None)),
        ("Created", time_tag(inv.i_created[row])),
        ("Reads", h(inv.i_access_count[row])),
        ("Owner / group", f"{h(inv.i_owner.get(row))} / {h(inv.i_group.get(row))}"),
        ("Metadata", f"<code>{h(json.dumps(inv.i_metadata.get(row) or {}))}</code>"),
    )
    dl = '<dl class="facts item">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) \
        + "</dl>"
    replica_rows = []
    for r in inv.replica_rows_of_item(row):
        storage = inv.storages[inv.r_storage[r]]
        rsize = inv.r_size[r]
        replica_rows.append(f'<tr data-storage="{h(storage.name)}">' + "".join((
            td(h(storage.name)), td(h(model.REPLICA_STATES[inv.r_state[r]])),
            td(h(size(rsize if rsize >= 0 else None)), rsize),
            td(time_tag(inv.r_created[r]), inv.r_created[r]),
            td(h(inv.replica_uri(r)))))
            + "</tr>")
    ops = figures.operations_of(inv, oid)
    requests = sorted((r for r in inv.requests.values() if r.oid == oid), key=lambda r: -r.id)
    decision_rows = []
    for c, d in item_decisions:
        decision_rows.append("<tr>" + "".join((
            td(f'<a href="/dashboard/cycles/{c.id}">#{c.id}</a>', c.id),
            td(time_tag(c.started), c.started), td(h(d.get("storage"))),
            td(f'<span class="badge outcome-{h(d.get("outcome"))}">{h(d.get("outcome"))}'
               "</span>"),
            td(h(d.get("rule"))), td(h(d.get("line"))))) + "</tr>")
    return "".join((
        dl,
        "<section><h2>Replicas</h2>",
        table("replicas-table", ["Storage", "State", "Size", "Created", "URI"], replica_rows,
              empty="No replica."),
        copy_request_form(inv, model.format_uuid(oid)),
        "</section><section><h2>Copy requests</h2>",
        requests_table(inv, requests, "item-requests"),
        "</section><section><h2>Operations</h2>",
        table("item-ops", [title for title in OP_HEADERS if title != "Item"],
              operation_rows(inv, ops, item=False), empty="No operation on this item."),
        "</section><section><h2>Detox decisions</h2>",
        table("item-decisions", ["Cycle", "Started", "Storage", "Outcome", "Rule", "Line"],
              decision_rows, empty="No recent Detox cycle judged this item."),
        "</section>"))


# ------------------------------------------------------------------------------- consistency

CONSISTENCY_CLASSES = ("missing", "orphan", "size_mismatch", "checksum_mismatch", "ok")


def _tally(value: Any) -> tuple[int | None, int | None]:
    """(count, bytes) of a report's class tally (``{"count", "bytes"}`` or a bare count)."""
    if isinstance(value, Mapping):
        count, nbytes = value.get("count"), value.get("bytes")
        return (count if isinstance(count, int) else None,
                nbytes if isinstance(nbytes, int) else None)
    return (value, None) if isinstance(value, int) else (None, None)


def consistency(reports: list[Cycle]) -> str:
    """The latest report of each storage, then every report, newest first; each links to its
    full HTML report (fetched with the token by the script)."""

    def storage_of(c: Cycle) -> str:
        storage = c.summary.get("storage")
        return str(storage.get("name")) if isinstance(storage, Mapping) else "?"

    def row(c: Cycle) -> str:
        counts = c.summary.get("counts") if isinstance(c.summary.get("counts"), Mapping) else {}
        cells = [td(f'<a href="/dashboard/cycles/{c.id}">#{c.id}</a>', c.id),
                 td(h(storage_of(c))), td(time_tag(c.ended or c.started), c.ended or c.started)]
        for kind in CONSISTENCY_CLASSES:
            count, nbytes = _tally(counts.get(kind))
            text = h(count) + (f' <span class="muted">({h(size(nbytes))})</span>'
                               if nbytes else "")
            cells.append(td(text, count, f"count {kind}" if count else ""))
        safety = c.summary.get("safety")
        fix = c.summary.get("fix")
        cells += [td(h(safety) if safety else "ok", cls="error" if safety else ""),
                  td(h("applied" if isinstance(fix, Mapping) else "report only")),
                  td(f'<a data-authed href="/v1/consistency/reports/{c.id}?format=html">'
                     "full report</a>")]
        return f'<tr data-storage="{h(storage_of(c))}">{"".join(cells)}</tr>'

    headers = ["Report", "Storage", "Listed", "Missing", "Orphan", "Size mismatch",
               "Checksum mismatch", "OK", "Safety", "Fix", "HTML"]
    latest: dict[str, Cycle] = {}
    for c in reports:  # newest first
        latest.setdefault(storage_of(c), c)
    return ("<section><h2>Latest report per storage</h2>"
            + table("consistency-latest", headers,
                    [row(c) for _, c in sorted(latest.items())],
                    empty="No consistency report yet: run dlm consistency STORAGE.")
            + "</section><section><h2>All reports</h2>" + filter_box("consistency-all")
            + table("consistency-all", headers, [row(c) for c in reports[:500]],
                    empty="No consistency report yet.")
            + "</section>")
