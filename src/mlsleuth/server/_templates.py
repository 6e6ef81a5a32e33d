"""The dashboard's Jinja templates, kept in Python so that they ship with the package; autoescape is on."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["render_page"]

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}mlsleuth{% endblock %}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{% block head %}<script src="/static/plotly.min.js"></script>{% endblock %}
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2937;color:#fff;padding:.6em 1.2em}header a{color:#fff;text-decoration:none;margin-right:1em}
main{max-width:80em;margin:1em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}.muted{color:#666}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:.8em 0}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}
</style></head>
<body><header><a href="/"><b>mlsleuth</b></a><a href="/">models</a><a
href="/incidents">incidents</a><a href="/alerts">alerts</a>
<form method="post" action="/logout" style="display:inline"><button type="submit">log out</button></form></header>
<main>{% block body %}{% endblock %}</main></body></html>
"""

_OVERVIEW = """{% extends "base" %}{% block title %}mlsleuth: models{% endblock %}{% block body %}
<h1>Models</h1>
{% if not models %}<p class="muted">No requests stored yet. Send some to <code>POST /v1/log</code>.</p>{% endif %}
<table id="models"><tr><th>model</th><th>health</th><th>versions</th><th>requests</th><th>from</th><th>to</th>
<th>labelled</th><th></th></tr>
{% for m in models %}<tr>
<td><a class="model-link" href="/models/{{ m.name | urlencode }}">{{ m.name }}</a></td>
<td class="{{ 'bad' if m.health != 'ok' else 'ok' }}">{{ m.health }}</td>
<td>{{ m.versions | join(', ') }}</td><td>{{ '{:,}'.format(m.rows) }}</td>
<td>{{ m.first_ts }}</td><td>{{ m.last_ts }}</td><td>{{ '%.0f' % (100 * m.labelled) }}%</td>
<td><a href="/models/{{ m.name | urlencode }}/incident">diagnose</a></td></tr>{% endfor %}
</table>
<h2>Open incidents</h2>{% set incidents = open_incidents %}{% include "incident_list" %}
<p><a href="/incidents">all incidents</a></p>
<h2>Recent alerts</h2>{% include "alert_list" %}
<p class="muted">{{ events }} change events · {{ quarantined }} rows in quarantine</p>
{% endblock %}"""

_ALERT_LIST = """{% if not alerts %}<p class="muted">No alert has fired.</p>{% else %}
<table class="alerts"><tr><th>when</th><th>rule</th><th>model</th><th>column</th><th>value</th><th></th></tr>
{% for a in alerts %}<tr><td>{{ a.at.strftime('%Y-%m-%d %H:%M UTC') }}</td>
<td>{{ a.rule }}</td><td>{{ a.model }}</td><td>{{ a.column or '' }}</td>
<td>{{ '%.4g' % a.value }}</td><td><a class="incident-link" href="{{ a.link }}">open the diagnosis</a></td></tr>
{% endfor %}</table>{% endif %}"""

_INCIDENT_LIST = """{% if not incidents %}<p class="muted">No incident.</p>{% else %}
<table class="incidents"><tr><th>incident</th><th>model</th><th>status</th><th>cause</th><th>onset</th>
<th>culprits</th><th>opened</th><th>updated</th></tr>
{% for i in incidents %}<tr>
<td><a class="incident-page-link"
href="/models/{{ i.model | urlencode }}/incidents/{{ i.id | urlencode }}">{{ i.id }}</a></td><td>{{ i.model }}</td>
<td class="{{ 'muted' if i.status.value == 'resolved' else 'bad' }}">{{ i.status.value }}</td>
<td class="cause">{{ i.top.cause.value }}</td><td>{{ when(i.top.onset) }}</td>
<td>{{ (i.top.features + i.top.inputs) | join(', ') }}</td>
<td>{{ when(i.opened_at) }}</td><td>{{ when(i.updated_at) }}</td></tr>{% endfor %}
</table>{% endif %}"""

_INCIDENTS = """{% extends "base" %}{% block title %}mlsleuth: incidents{% endblock %}{% block body %}
<h1>Incidents</h1>
<p class="muted">One incident per root cause, opened by automatic detection{% if interval %} (every
{{ interval }} s){% endif %}; times are the models' data time.</p>
{% include "incident_list" %}{% endblock %}"""

_INCIDENT_PAGE = """{% extends "base" %}{% block title %}mlsleuth: incident {{ i.id }}{% endblock %}
{% block body %}<h1>Incident {{ i.id }} of {{ i.model }}:
<span id="incident-status" class="{{ 'muted' if i.status.value == 'resolved' else 'bad' }}">{{ i.status.value }}</span>
</h1>
<p>Opened {{ when(i.opened_at) }} · updated {{ when(i.updated_at) }}
{% if i.resolved_at %} · resolved {{ when(i.resolved_at) }}{% endif %}
{% if i.last_seen %} · last seen {{ when(i.last_seen) }}{% endif %}</p>
{% if i.status.value == 'open' %}<form method="post" id="acknowledge"
action="/v1/models/{{ i.model | urlencode }}/incidents/{{ i.id | urlencode }}/acknowledge">
<button type="submit">acknowledge</button> <span class="muted">(needs a write token)</span></form>{% endif %}
<div class="card" id="top-cause"><h2>{{ i.top.cause.value }}
<span class="muted">(confidence {{ '%.2f' % i.top.confidence }})</span></h2>
<p>{{ i.top.sentence() }}</p>
<p>onset: {{ when(i.top.onset) or 'no single start' }}</p>
{% if i.top.features %}<p>features: <b class="culprit">{{ i.top.features | join(', ') }}</b></p>{% endif %}
{% if i.top.inputs %}<p>inputs: <b class="culprit">{{ i.top.inputs | join(', ') }}</b></p>{% endif %}
{% if i.top.segments %}<p>segments: {% for s in i.top.segments %}{% for k, v in s.items() %}{{ k }}={{ v }}
{% endfor %}{% endfor %}</p>{% endif %}
{% if i.top.events %}<p>events: {{ i.top.events | join(', ') }}</p>{% endif %}
{% if i.top.first_step %}<p>first step: {{ i.top.first_step }}</p>{% endif %}
</div>
<p><a id="incident-diagnosis" href="{{ diagnose_url }}">The diagnosis over the incident's span</a> ·
post-mortem: <a id="incident-postmortem" href="{{ export_url }}&format=md">Markdown</a> ·
<a href="{{ export_url }}&format=html">HTML</a> · <a href="{{ export_url }}&format=json">JSON</a></p>
{% for chart in charts %}<div class="card">{{ chart | safe }}</div>{% endfor %}
{% if note %}<p class="muted" id="timeline-note">No timeline: {{ note }}</p>{% endif %}
<h2>History</h2><table id="incident-history"><tr><th>when</th><th>what</th><th>cause then</th><th>note</th></tr>
{% for u in i.history %}<tr><td>{{ when(u.at) }}</td><td>{{ u.kind.value }}</td>
<td>{{ u.cause.sentence() if u.cause else '' }}</td><td>{{ u.note }}</td></tr>{% endfor %}</table>
{% endblock %}"""

_ALERTS = """{% extends "base" %}{% block title %}mlsleuth: alerts{% endblock %}{% block body %}
<h1>Alerts</h1>{% include "alert_list" %}
<h2>Rules</h2><table><tr><th>rule</th><th>model</th><th>monitor</th><th>column</th><th>threshold</th><th>window</th>
<th>cooldown</th><th>state</th></tr>
{% for r in rules %}<tr><td>{{ r.name }}</td><td>{{ r.model }}</td><td>{{ r.monitor }}</td>
<td>{{ r.column or 'any' }}</td>
<td>{{ r.threshold }}</td><td>{{ r.window }}</td><td>{{ r.cooldown }}</td><td>{{ states.get(r.name, 'ok') }}</td></tr>
{% endfor %}</table>{% endblock %}"""

_MODEL = """{% extends "base" %}{% block title %}mlsleuth: {{ model }}{% endblock %}{% block body %}
<h1>Model {{ model }}</h1>
<p>{{ '{:,}'.format(status.rows) }} requests from {{ first }} to {{ last }};
versions {{ status.versions | join(', ') }}; {{ '%.0f' % (100 * status.labelled_fraction) }}% labelled.
Showing {{ since }} to {{ until }} in windows of {{ window }}.</p>
<p><a id="diagnose-link" href="{{ diagnose_url }}">Diagnose this model over this span</a></p>
{% if alerts %}<h2>Incidents</h2>{% include "alert_list" %}{% endif %}
{% if not has_reference %}<p class="bad">No reference uploaded for this model: drift cannot be measured.
Upload training data to <code>POST /v1/models/{{ model }}/reference</code>.</p>{% endif %}
{% for chart in charts %}<div class="card">{{ chart | safe }}</div>{% endfor %}
<h2>Change events</h2>{% if not events %}<p class="muted">none in this span</p>{% else %}
<table><tr><th>when</th><th>id</th><th>kind</th><th>target</th><th>description</th></tr>
{% for e in events %}<tr><td>{{ e.ts }}</td><td>{{ e.id }}</td><td>{{ e.kind }}</td><td>{{ e.target }}</td>
<td>{{ e.description }}</td></tr>{% endfor %}</table>{% endif %}
{% endblock %}"""

_INCIDENT = """{% extends "base" %}{% block title %}mlsleuth: diagnosis of {{ model }}{% endblock %}{% block body %}
<h1>Diagnosis of {{ model }}:
<span id="verdict" class="{{ 'bad' if d.top else 'ok' }}">{{ d.verdict.value }}</span></h1>
<p class="muted">{{ since }} to {{ until }} ·
export: <a id="postmortem-md" href="{{ export_url }}&format=md">post-mortem (Markdown)</a> ·
<a href="{{ export_url }}&format=html">HTML</a> · <a href="{{ export_url }}&format=json">JSON</a></p>
<h2>Triage</h2>
{% if tri %}<p>{{ '{:,}'.format(tri.get('rows', 0)) }} requests from {{ tri.get('from') }} to {{ tri.get('to') }}
(windows of {{ tri.get('window_seconds', 0) // 60 }} min).</p>{% endif %}
{% if d.symptoms %}<table id="symptoms">
<tr><th>metric</th><th>before</th><th>after</th><th>onset</th><th>trend</th></tr>
{% for s in d.symptoms %}<tr><td>{{ s.metric }}</td><td>{{ '%.4g' % s.before }}</td><td>{{ '%.4g' % s.after }}</td>
<td>{{ s.onset or 'gradual' }}</td><td>{{ s.trend }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No output or quality metric moved.</p>{% endif %}
{% if d.layers %}<h2>Layers</h2><table id="layers"><tr><th>layer</th><th>status</th><th>evidence</th></tr>
{% for l in d.layers %}<tr><td>{{ l.name }}</td><td>{{ l.status.value }}</td><td>{{ l.evidence | join('; ') }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Hypotheses</h2>{% if not d.hypotheses %}<p class="ok">Healthy: no hypothesis.</p>{% endif %}
{% for h in d.hypotheses %}<div class="card hypothesis">
<h3>{{ loop.index }}. {{ h.cause.value }} <span class="muted">(confidence {{ '%.2f' % h.confidence }})</span></h3>
<p>onset: {{ h.onset or 'no single start' }}</p>
{% if h.features %}<p>features: <b class="culprit">{{ h.features | join(', ') }}</b></p>{% endif %}
{% if h.inputs %}<p>inputs: <b class="culprit">{{ h.inputs | join(', ') }}</b></p>{% endif %}
{% if h.sources %}<p>sources: {{ h.sources | join(', ') }}</p>{% endif %}
{% if h.segments %}<p>segments: {% for s in h.segments %}{% for k, v in s.items() %}{{ k }}={{ v }} {% endfor %}
{% endfor %}</p>{% endif %}
{% if h.events %}<p>events: {{ h.events | join(', ') }}</p>{% endif %}
<h4>Evidence</h4><ul>{% for e in h.evidence %}<li>{{ e }}</li>{% endfor %}</ul>
{% if h.next_steps %}<h4>Next steps</h4><ol>{% for s in h.next_steps %}<li>{{ s }}</li>{% endfor %}</ol>{% endif %}
</div>{% endfor %}
{% for chart in charts %}<div class="card">{{ chart | safe }}</div>{% endfor %}
{% if d.runbook %}<h2>Runbook</h2><pre id="runbook">{{ d.runbook }}</pre>{% endif %}
{% if d.findings %}<h2>Other findings</h2>
<ul>{% for f in d.findings %}<li>{{ f.message }}</li>{% endfor %}</ul>{% endif %}
{% if d.skipped %}<h2>Not checked</h2><ul>{% for s in d.skipped %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
{% endblock %}"""

_LOGIN = """{% extends "base" %}{% block title %}mlsleuth: log in{% endblock %}{% block head %}{% endblock %}
{% block body %}<h1>Log in</h1>
{% if message %}<p class="bad" id="login-error">{{ message }}</p>{% endif %}
<form method="post" action="/login" id="login"><label>Token
<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">log in</button></form>
<p class="muted">The token is sent in the form's body, never in the address; the browser keeps only a session
cookie.</p>{% endblock %}"""

TEMPLATES = {"base": _BASE, "login": _LOGIN, "overview": _OVERVIEW, "alert_list": _ALERT_LIST, "alerts": _ALERTS,
             "model": _MODEL, "incident": _INCIDENT, "incident_list": _INCIDENT_LIST, "incidents": _INCIDENTS,
             "incident_page": _INCIDENT_PAGE}


@functools.cache
def _env() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - the server extra installs it
        raise ImportError("the dashboard needs jinja2: pip install 'mlsleuth[server]'") from exc
    return jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)


def render_page(name: str, **context: Any) -> str:
    """Render one dashboard page; every value is escaped unless a template marks it safe (charts only)."""
    return str(_env().get_template(name).render(**context))
