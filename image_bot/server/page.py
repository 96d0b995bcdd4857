"""The read-only status page at ``/``: the status document (``engine.overview``) as HTML.

Server-rendered, no build step: each image as a pipeline of stages and agents, counters on
top, readable at phone width. A small inline script re-fetches the page every 15 s and
swaps its content (a meta refresh does the same without JavaScript).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jinja2

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
REFRESH = 15  # seconds

_TEMPLATE = _ENV.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{{ refresh }}"></noscript>
<title>image-bot status</title>
<style>
 *{box-sizing:border-box}
 body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
 main{max-width:72rem;margin:0 auto;padding:1rem}
 h1{font-size:1.3rem;margin:0} h2{font-size:1.05rem;margin:0}
 h3{font-size:1rem;margin:1.4rem 0 .4rem}
 a{color:#0969da} code{font-size:12.5px;overflow-wrap:anywhere}
 .meta{color:#57606a;font-size:12.5px} .error{color:#cf222e}
 p,li,td,div{overflow-wrap:anywhere}
 .counters{display:grid;grid-template-columns:repeat(auto-fit,minmax(7.5rem,1fr));gap:.5rem;
   margin:.8rem 0}
 .counter{background:#fff;border:1px solid #d0d7de;border-radius:.5rem;padding:.5rem .7rem}
 .counter b{display:block;font-size:1.5rem;line-height:1.2}
 .counter.failing.some{border-color:#cf222e;background:#ffebe9}
 .counter.degraded.some{border-color:#bc4c00;background:#fff1e5}
 .counter.pending.some{border-color:#9a6700;background:#fff8c5}
 .banner{border-radius:.5rem;padding:.5rem .7rem;margin:.4rem 0;border:1px solid}
 .banner.bad{background:#ffebe9;border-color:#cf222e}
 .pipeline{background:#fff;border:1px solid #d0d7de;border-radius:.6rem;margin:.8rem 0;
   padding:.7rem .8rem}
 .pipeline>header{display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:baseline}
 .stages{list-style:none;margin:.6rem 0 0;padding:0;display:grid;gap:.6rem;
   grid-template-columns:repeat(auto-fit,minmax(17rem,1fr))}
 .stage{border:1px solid #d0d7de;border-left:.35rem solid #8c959f;border-radius:.4rem;
   padding:.5rem .6rem;min-width:0}
 .stage.current,.stage.declined{border-left-color:#1a7f37}
 .stage.pending,.stage.promoting,.stage.waiting{border-left-color:#bf8700}
 .stage.degraded{border-left-color:#bc4c00;background:#fff1e5}
 .stage.failed{border-left-color:#cf222e;background:#ffebe9;border-color:#cf222e}
 .stage.unmatched{border-left-color:#9a6700;background:#fff8c5;border-color:#d4a72c}
 .stage.suspended{border-left-color:#6e7781;background:#f6f8fa}
 .stage>header{display:flex;justify-content:space-between;gap:.5rem;align-items:baseline}
 .badge{display:inline-block;padding:0 .5rem;border-radius:1rem;font-size:12px;
   font-weight:600;background:#eaeef2;white-space:nowrap}
 .badge.current,.badge.declined{background:#dafbe1;color:#116329}
 .badge.pending,.badge.promoting,.badge.waiting{background:#fff8c5;color:#7d4e00}
 .badge.degraded{background:#ffd8b5;color:#953800}
 .badge.failed{background:#cf222e;color:#fff} .badge.unmatched{background:#d4a72c;color:#000}
 .badge.suspended{background:#d0d7de;color:#24292f}
 .promotion{margin:.3rem 0;padding:.2rem .4rem;background:#ddf4ff;border-radius:.3rem}
 .agents{list-style:none;margin:.4rem 0 0;padding:0;border-top:1px dashed #d0d7de}
 .agents li{padding:.25rem 0}
 .pill{display:inline-block;padding:0 .4rem;border-radius:1rem;background:#eaeef2;
   font-size:12px}
 .pill.ok{background:#dafbe1;color:#116329} .pill.bad{background:#ffebe9;color:#a40e26}
 .scroll{overflow-x:auto;max-width:100%}
 table{border-collapse:collapse;width:100%;background:#fff}
 th,td{border:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}
 th{background:#f3f4f6} #events td:nth-child(-n+2){white-space:nowrap}
 @media (max-width:40rem){main{padding:.6rem} .stages{grid-template-columns:1fr}}
</style></head>
<body><main id="pane">
<header>
<h1>image-bot</h1>
<p class="meta">{{ doc.mode or 'status from the state dir' }}
· generated {{ clock(doc.generated_at) }} · refreshes every {{ refresh }} s</p>
</header>

<section class="counters" id="summary">
{% for key, label in counters %}
<div class="counter {{ key }} {{ 'some' if doc.summary[key] else '' }}" id="count-{{ key }}">
<b>{{ doc.summary[key] }}</b>{{ label }}</div>
{% endfor %}
</section>

{% for peer in doc.peers if not peer.ok %}
<p class="banner bad peer-failed">peer <code>{{ peer.url }}</code> did not answer:
{{ peer.error }} (its stages are missing below)</p>
{% endfor %}
{% for stage in attention %}
<p class="banner bad attention"><b>{{ stage.policy }}</b>
{{- ' failed' if stage.state == 'failed' else ' matches no file' }}:
{{ stage.reason or stage.message }}</p>
{% endfor %}

<section id="pipelines">
{% for p in doc.pipelines %}
<article class="pipeline" id="pipeline-{{ p.image }}">
<header><h2><code>{{ p.image }}</code></h2>
<span class="meta">newest eligible in the registry:
<code class="newest">{{ p.newest or '—' }}</code></span></header>
<ol class="stages">
{% for s in p.stages %}
<li class="stage {{ s.state }}" id="stage-{{ s.policy }}" data-state="{{ s.state }}">
<header><b>{{ s.policy }}</b><span class="badge {{ s.state }}">{{ s.state }}</span></header>
{% if s.upstream %}<div class="promotion">from <b>{{ s.upstream }}</b>:
{{ s.promotion }}</div>{% endif %}
<div>in Git: <code class="tag">{{ s.tag or '—' }}</code>
{%- if s.latest and s.latest != s.tag %} → <code>{{ s.latest }}</code>{% endif %}</div>
<div class="meta">{{ s.repository }} ({{ s.branch or '?' }}) ·
{% if s.source_url %}<a href="{{ s.source_url }}">{{ s.file }}</a>{% else %}{{ s.file }}{% endif %}
{%- for f in s.files %} · {{ f }}{% endfor %}</div>
{% if s.pull_request %}<div>open PR: {% if s.pull_request_url %}<a class="pr"
 href="{{ s.pull_request_url }}">{{ s.pull_request }}</a>{% else %}{{ s.pull_request }}{% endif %}
</div>{% endif %}
{% if s.reason %}<div class="reason {{ 'error' if s.state in ('failed', 'degraded') else '' }}">
{{- s.reason }}</div>{% endif %}
{% for d in s.declined[-3:] %}<div class="meta">declined <code>{{ d.tag }}</code>:
{{ d.reason }}</div>{% endfor %}
{% set u = s['update'] %}{% if u %}<div class="meta">last update
<code>{{ u.old_tag or '?' }} → {{ u.tag }}</code> {{ u.state }} ·
{% if u.commit_url %}<a href="{{ u.commit_url }}"><code>{{ u.commit[:12] }}</code></a>
{%- else %}<code>{{ (u.commit or '')[:12] }}</code>{% endif %}
· push → commit {{ seconds(u.push_to_commit) }}
· commit → deployed {{ seconds(u.commit_to_deployed) }}</div>{% endif %}
{% if s.agents %}<ul class="agents">
{% for a in s.agents %}<li class="agent" id="agent-{{ s.policy }}-{{ a.agent }}">
<b>{{ a.agent }}</b> runs <code>{{ a.tag or '—' }}</code>
<span class="pill {{ 'ok' if a.sync == 'Synced' else 'bad' }}">{{ a.sync }}</span>
<span class="pill {{ 'ok' if a.health == 'Healthy' else 'bad' }}">{{ a.health }}</span>
{% if a.stale %}<span class="pill bad">stale: silent since {{ ago(a.seen_at) }}</span>{% endif %}
<br><span class="meta">@ <code>{{ (a.revision or '-')[:12] }}</code>
{%- if a.since %} · since {{ ago(a.since) }}{% endif %} · last pass {{ ago(a.seen_at) }}
</span>{% if a.error %}<br><span class="error">{{ a.error }}</span>{% endif %}</li>
{% endfor %}</ul>{% else %}<div class="meta">no agent reports on this stage</div>{% endif %}
<div class="meta">last run {{ ago(s.last_run) }}{% if s.last_error %} · last error
{{ ago(s.last_error_at) if s.last_error_at else '' }}: <span class="error">
{{- s.last_error }}</span>{% endif %}</div>
</li>
{% endfor %}
</ol>
</article>
{% else %}
<p>No policy has run yet.</p>
{% endfor %}
</section>

<h3>Agents</h3>
{% for a in doc.sync %}
<p id="sync-{{ a.agent }}"><b>{{ a.agent }}</b> · {{ a.repository }} ({{ a.branch }})
{{ a.path }} → {{ a.target }} @ <code>{{ (a.revision or '-')[:12] }}</code>
<span class="pill {{ 'ok' if a.summary.sync == 'Synced' else 'bad' }}">{{ a.summary.sync }}</span>
<span class="pill {{ 'ok' if a.summary.health == 'Healthy' else 'bad' }}">
{{- a.summary.health }}</span>
<span class="meta">{{ ago(a.finished_at) if a.finished_at else '' }}</span>
{% if a.stale is defined and a.stale %}<span class="pill bad">stale: silent since
{{ ago(a.received_at) }}</span>{% endif %}
{% for error in a.errors %}<br><span class="error">{{ error }}</span>{% endfor %}
{% for s in a.services if not (s.sync == 'Synced' and s.health == 'Healthy') %}
<br><span class="meta">{{ s.application }}/{{ s.service }}: {{ s.sync }}, {{ s.health }}
{%- if s.error %}: <span class="error">{{ s.error }}</span>{% endif %}</span>{% endfor %}</p>
{% else %}<p class="meta">No sync agent has reported.</p>{% endfor %}

<h3>Recent events</h3>
<div class="scroll"><table id="events">
<tr><th>when</th><th>kind</th><th>details</th></tr>
{% for e in events %}
<tr><td>{{ ago(e.at) }}</td><td>{{ e.kind }}</td><td>{{ e.text }}</td></tr>
{% else %}<tr><td colspan="3" class="meta">none yet</td></tr>{% endfor %}
</table></div>
</main>
<script>
setInterval(async () => {
  try {
    const answer = await fetch(location.href, {cache: "no-store"});
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    const pane = fresh.getElementById("pane");
    if (pane) document.getElementById("pane").replaceWith(pane);
  } catch (error) { /* the daemon is restarting: try again next time */ }
}, {{ refresh * 1000 }});
</script>
</body></html>
""")

COUNTERS = (("up_to_date", "up to date"), ("pending", "pending"), ("degraded", "degraded"),
            ("failing", "failing"), ("suspended", "suspended"))


def ago(at: float, now: float | None = None) -> str:
    seconds = max(0, int((now or time.time()) - at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _event_text(event: Mapping[str, Any]) -> str:
    skip = {"at", "kind"}
    return ", ".join(f"{key}={_plain(value)}" for key, value in sorted(event.items())
                     if key not in skip and value not in (None, "", [], {}))


def _plain(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}s" if value < 120 else ago(0, now=value).removesuffix(" ago")


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def render(document: Mapping[str, Any]) -> str:
    """The page of one status document (``engine.overview``, peers merged in)."""
    shown = [{"at": e["at"], "kind": e["kind"], "text": _event_text(e)}
             for e in document.get("events", [])]
    attention = [s for p in document["pipelines"] for s in p["stages"]
                 if s["state"] in ("failed", "unmatched")]
    return _TEMPLATE.render(doc={"mode": None, **document}, events=shown,
                            attention=attention, counters=COUNTERS, refresh=REFRESH,
                            seconds=seconds, ago=ago, clock=_clock)
