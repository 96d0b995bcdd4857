"""The read-only status page at ``/``: server-rendered HTML, no JavaScript, no build step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jinja2

from image_bot.engine import history

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

_TEMPLATE = _ENV.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15">
<title>image-bot status</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#fafbfc}
 h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
 .meta{color:#57606a} table{border-collapse:collapse;width:100%;background:#fff}
 th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
 th{background:#f3f4f6} code{font-size:13px}
 .updated{color:#1a7f37;font-weight:600} .failed{color:#cf222e;font-weight:600}
 .current{color:#57606a} .behind{background:#fff8c5} .error{color:#cf222e}
 .unmatched{color:#9a6700;font-weight:600}
 .pill{display:inline-block;padding:0 .5rem;border-radius:1rem;background:#eaeef2}
</style></head>
<body>
<h1>image-bot</h1>
<p class="meta">{{ summary }} · page rendered {{ now }} · refreshes every 15 s</p>

<h2>Policies</h2>
{% if policies %}
<table id="policies">
<tr><th>policy</th><th>image</th><th>in Git</th><th>latest eligible</th><th>status</th>
<th>open PR</th><th>last error</th><th>last run</th></tr>
{% for p in policies %}
<tr class="{{ 'behind' if p.latest and p.current != p.latest else '' }}">
<td><b>{{ p.policy }}</b><br><span class="meta">{{ p.repository }}</span></td>
<td><code>{{ p.image }}</code></td>
<td><code>{{ p.current or '—' }}</code></td>
<td><code>{{ p.latest or '—' }}</code>{% for d in p.declined %}
<br><span class="meta">declined <code>{{ d.tag }}</code>: {{ d.reason }}</span>{% endfor %}</td>
<td class="{{ p.status }}">{{ p.status }}</td>
<td>{{ p.pull_request or '—' }}</td>
<td class="error">{{ p.last_error or '' }}{% if p.last_error_at %}
<br><span class="meta">{{ ago(p.last_error_at) }}</span>{% endif %}</td>
<td>{{ ago(p.last_run) }}</td>
</tr>
{% endfor %}
</table>
{% else %}
<p>No policy has run yet.</p>
{% endif %}

<h2>Sync agent</h2>
{% for a in sync %}
<p id="sync-{{ a.agent }}"><b>{{ a.agent }}</b> · {{ a.repository }} ({{ a.branch }}) {{ a.path }}
→ {{ a.target }} @ <code>{{ (a.revision or '-')[:12] }}</code> ·
<span class="pill {{ 'updated' if a.summary.sync == 'Synced' else 'failed' }}">
{{- a.summary.sync }}</span>
<span class="pill {{ 'updated' if a.summary.health == 'Healthy' else 'failed' }}">
{{- a.summary.health }}</span>
<span class="meta">{{ ago(a.finished_at) if a.finished_at else '' }}</span>
{% if a.stale is defined and a.stale %}<span class="pill failed">stale: silent since
{{ ago(a.received_at) }}</span>{% endif %}</p>
{% for error in a.errors %}<p class="error">{{ error }}</p>{% endfor %}
{% if a.services %}
<table>
<tr><th>application</th><th>service</th><th>sync</th><th>health</th><th>image</th><th>details</th></tr>
{% for s in a.services %}
<tr><td>{{ s.application }}</td><td>{{ s.service }}</td>
<td class="{{ 'current' if s.sync == 'Synced' else 'failed' }}">{{ s.sync }}</td>
<td class="{{ 'current' if s.health == 'Healthy' else 'failed' }}">{{ s.health }}</td>
<td><code>{{ s.image or '' }}</code></td>
<td>{{ [s.action if s.action != 'none' else '', s.drift or '', s.error or '']
      | select | join('; ') }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% else %}<p class="meta">No sync agent reports to this state dir.</p>{% endfor %}

<h2>Deployments</h2>
{% if updates %}
<table id="deployments">
<tr><th>image</th><th>update</th><th>commit</th><th>state</th><th>push → commit</th>
<th>agents (commit → deployed)</th><th>rollback</th></tr>
{% for u in updates %}
<tr><td><code>{{ u.image }}</code><br><span class="meta">{{ u.policy }}</span></td>
<td><code>{{ u.old_tag or '?' }} → {{ u.tag }}</code></td>
<td><code>{{ u.commit[:12] }}</code></td>
<td class="{{ 'updated' if u.state == 'deployed' else ('failed' if u.state in
    ('degraded', 'rolled-back', 'degraded-kept') else 'current') }}">{{ u.state }}
{% if u.reason %}<br><span class="meta">{{ u.reason }}</span>{% endif %}</td>
<td>{{ seconds(u.push_to_commit) }}</td>
<td>{% for name, a in u.agents.items() %}{{ name }}: {{ a.state }}
{%- if a.commit_to_deployed is not none %} ({{ seconds(a.commit_to_deployed) }}){% endif %}
<br>{% else %}—{% endfor %}</td>
<td>{% if u.rollback %}{{ u.rollback.action }}{% if u.rollback.commit %}
<code>{{ u.rollback.commit[:12] }}</code>{% endif %}{% else %}—{% endif %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="meta">No bot commit followed yet.</p>{% endif %}

<h2>Recent events</h2>
<table id="events">
<tr><th>when</th><th>kind</th><th>details</th></tr>
{% for e in events %}
<tr><td>{{ ago(e.at) }}</td><td>{{ e.kind }}</td><td>{{ e.text }}</td></tr>
{% else %}<tr><td colspan="3" class="meta">none yet</td></tr>{% endfor %}
</table>
</body></html>
""")


def ago(at: float, now: float | None = None) -> str:
    seconds = max(0, int((now or time.time()) - at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _event_text(event: dict[str, Any]) -> str:
    skip = {"at", "kind"}
    return ", ".join(f"{key}={_plain(value)}" for key, value in sorted(event.items())
                     if key not in skip and value not in (None, "", [], {}))


def _plain(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}s" if value < 120 else ago(0, now=value).removesuffix(" ago")


def render(policies: Sequence[history.PolicyStatus], events: Sequence[dict[str, Any]], *,
           sync: Sequence[dict[str, Any]], summary: str,
           updates: Sequence[dict[str, Any]] = ()) -> str:
    """The page: policies, sync agents (their last pass, from ``history.sync_reports`` and
    the agents' reports), deployments (``engine.deployments``), events."""
    shown = [{"at": e["at"], "kind": e["kind"], "text": _event_text(e)} for e in events]
    return _TEMPLATE.render(policies=policies, events=shown[:30], sync=sync, summary=summary,
                            updates=updates, seconds=seconds,
                            now=time.strftime("%Y-%m-%d %H:%M:%S %Z"), ago=ago)
