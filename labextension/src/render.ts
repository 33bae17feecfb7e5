/**
 * Pure rendering logic: kernel snapshots in, HTML strings and summaries out.
 *
 * Nothing here imports JupyterLab or touches the DOM, so it runs under vitest in plain Node.
 * The widgets in sidebar.ts / statusbar.ts only assign the strings produced here.
 */

/** One instance row of `provider.status()` (see docs/architecture.md). */
export interface IInstanceStatus {
  /** `instance` in the hub's status() rows; `id` in docs/architecture.md: both accepted. */
  id?: string;
  instance?: string;
  /** "drained" while disabled; the underlying health is then in `health`. */
  endpoint?: string;
  status: string;
  health?: string;
  breaker: string;
  in_flight: number;
  enabled?: boolean;
  origin?: string;
  tags?: string[];
  requests?: number;
  successes?: number;
  failures?: number;
  success_rate?: number | null;
  p50_ms?: number | null;
  p95_ms?: number | null;
  p99_ms?: number | null;
  mean_ms?: number | null;
  last_error?: string | null;
  /** Seconds since last_error (snapshot time); `error_fresh`: younger than ERROR_FRESH_S. */
  last_error_age_s?: number | null;
  error_fresh?: boolean;
  health_error?: string | null;
  /** Short name that tells instances apart (the shared prefix replaced by "…"). */
  label?: string;
  /** Takes calls now: enabled, healthy or degraded, breaker not open (decided by the hub). */
  available?: boolean;
  tokens_per_s?: number | null;
  runs?: number | null;
  recycled?: number | null;
  [extra: string]: unknown;
}

/** `provider.status()` */
export interface IProviderStatus {
  name?: string;
  kind?: string;
  strategy?: string;
  initialized?: boolean;
  time?: number;
  error?: string;
  queue?: { waiting?: number; tenants?: number };
  instances: IInstanceStatus[];
  totals?: Record<string, unknown>;
}

/** Kernel -> front end `{"type": "snapshot", ...}` message. */
export interface ISnapshot {
  type: 'snapshot';
  version?: number;
  /** Balancing strategies the kernel's hub knows (for the strategy selector). */
  strategies?: string[];
  seq?: number;
  time?: number;
  providers: Record<string, IProviderStatus>;
}

/** What the sidebar shows for the active notebook. */
export type ViewState =
  | { kind: 'no-notebook' }
  | { kind: 'no-kernel'; notebook: string }
  | { kind: 'connecting'; notebook: string }
  | { kind: 'not-loaded'; notebook: string }
  | {
      kind: 'live';
      notebook: string;
      snapshot: ISnapshot | null;
      stale?: boolean;
      message?: { ok: boolean; text: string } | null;
    };

export type Level = 'ok' | 'warn' | 'error' | 'idle';

export interface IProviderSummary {
  name: string;
  label: string;
  healthy: number;
  total: number;
  busy: number;
  level: Level;
}

export interface ISummary {
  text: string;
  title: string;
  level: Level;
  providers: IProviderSummary[];
}

export const LOAD_HINT = '%load_ext gleitzeit_jupyter';

const LABELS: Record<string, string> = {
  ollama: 'LLM',
  llm: 'LLM',
  sandbox: 'Sandbox',
  python: 'Sandbox'
};

/** Short label of a provider in the status bar: "LLM" for ollama, "Sandbox" for sandbox. */
export function providerLabel(name: string, status?: IProviderStatus): string {
  const key = name.toLowerCase();
  if (LABELS[key]) {
    return LABELS[key];
  }
  const kind = (status?.kind || '').toLowerCase();
  if (kind.includes('ollama')) {
    return 'LLM';
  }
  if (kind.includes('python') || kind.includes('sandbox')) {
    return 'Sandbox';
  }
  return name;
}

const HEALTHY = new Set(['healthy', 'degraded']);

export function instanceId(inst: IInstanceStatus): string {
  return String(inst.id ?? inst.instance ?? '?');
}

/** Health of an instance, also while it is drained (status "drained"). */
export function healthOf(inst: IInstanceStatus): string {
  return inst.status === 'drained' && inst.health ? inst.health : inst.status;
}
const BAD = new Set(['unhealthy', 'stopped']);

/** Severity of one instance: an open breaker is an error, anything not healthy a warning. */
export function instanceLevel(inst: IInstanceStatus): Level {
  if (inst.breaker === 'open') {
    return 'error';
  }
  const health = healthOf(inst);
  if (BAD.has(health)) {
    return 'warn';
  }
  if (health === 'degraded' || inst.breaker === 'half_open') {
    return 'warn';
  }
  return 'ok';
}

/**
 * An instance counts as available when it is healthy (or degraded), enabled and not open.
 * The kernel's snapshot says so itself (`available`), so the sidebar, the status bar and
 * the notebook panels count alike; the rule below only serves older kernels.
 */
export function isAvailable(inst: IInstanceStatus): boolean {
  if (typeof inst.available === 'boolean') {
    return inst.available;
  }
  return (
    HEALTHY.has(inst.status) &&
    inst.breaker !== 'open' &&
    inst.enabled !== false
  );
}

function worst(a: Level, b: Level): Level {
  const rank: Record<Level, number> = { idle: 0, ok: 1, warn: 2, error: 3 };
  return rank[b] > rank[a] ? b : a;
}

export function summarizeProvider(name: string, p: IProviderStatus): IProviderSummary {
  const instances = p.instances || [];
  let level: Level = instances.length ? 'ok' : 'idle';
  let counted = 0;
  let busy = 0;
  for (const inst of instances) {
    level = worst(level, instanceLevel(inst));
    if (isAvailable(inst)) {
      counted += 1;
    }
    if ((inst.in_flight || 0) > 0) {
      busy += 1;
    }
  }
  // the hub's own count (the notebook panel's ALL row shows the same number)
  const total = p.totals?.available;
  const healthy = typeof total === 'number' ? total : counted;
  if (p.error) {
    level = 'error';
  } else if (instances.length > 0 && healthy === 0) {
    level = 'error';
  }
  return { name, label: providerLabel(name, p), healthy, total: instances.length, busy, level };
}

/** Status-bar text, e.g. "LLM 3/3 · Sandbox 5/5, 2 busy", and its colour level. */
export function summarize(snapshot: ISnapshot | null): ISummary {
  if (!snapshot) {
    return { text: 'Gleitzeit', title: 'Gleitzeit: no data yet', level: 'idle', providers: [] };
  }
  const providers = Object.keys(snapshot.providers)
    .sort()
    .map(name => summarizeProvider(name, snapshot.providers[name]));
  if (!providers.length) {
    return {
      text: 'Gleitzeit: no pools',
      title: 'Gleitzeit is loaded; no provider has been created yet (run %%llm or %%sandbox)',
      level: 'idle',
      providers
    };
  }
  let level: Level = 'idle';
  const parts: string[] = [];
  const titles: string[] = [];
  for (const s of providers) {
    level = worst(level, s.level);
    parts.push(`${s.label} ${s.healthy}/${s.total}` + (s.busy ? `, ${s.busy} busy` : ''));
    titles.push(
      `${s.name}: ${s.healthy} of ${s.total} instances available, ${s.busy} busy` +
        (s.level === 'error' ? ' (breaker open or no healthy instance)' : '') +
        (s.level === 'warn' ? ' (an instance is unhealthy)' : '')
    );
  }
  return {
    text: parts.join(' · '),
    title: titles.join('\n') + '\nClick to open the Gleitzeit sidebar',
    level,
    providers
  };
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;'
};

export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, c => ESCAPES[c]);
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** "12 s ago", "4 min ago", "2 h ago" (as the notebook panels write it). */
export function formatAge(seconds: unknown): string {
  const v = num(seconds);
  if (v === null) {
    return '';
  }
  if (v < 90) {
    return `${Math.max(0, Math.round(v))} s ago`;
  }
  if (v < 90 * 60) {
    return `${Math.round(v / 60)} min ago`;
  }
  return `${Math.round(v / 3600)} h ago`;
}

/** The last error line of a card: text (with its age), and whether it still counts. */
export function errorLine(inst: IInstanceStatus): { text: string; fresh: boolean } {
  if (inst.last_error) {
    const age = formatAge(inst.last_error_age_s);
    const fresh = inst.error_fresh !== false || healthOf(inst) !== 'healthy';
    return { text: (age ? `${age}: ` : '') + inst.last_error, fresh };
  }
  // no failed call: say why the health check fails (an idle instance has no calls)
  if (inst.health_error && healthOf(inst) !== 'healthy') {
    return { text: `health check: ${inst.health_error}`, fresh: true };
  }
  return { text: '', fresh: false };
}

/** "123 ms", "1.2 s", "–" */
export function formatMs(value: unknown): string {
  const v = num(value);
  if (v === null) {
    return '–';
  }
  if (v >= 10000) {
    return `${(v / 1000).toFixed(0)} s`;
  }
  if (v >= 1000) {
    return `${(v / 1000).toFixed(1)} s`;
  }
  return `${v >= 10 ? v.toFixed(0) : v.toFixed(1)} ms`;
}

/** success_rate is a fraction 0..1 (null before the first request). */
export function formatRate(value: unknown): string {
  const v = num(value);
  if (v === null) {
    return '–';
  }
  const pct = v <= 1 ? v * 100 : v;
  return `${pct >= 99.95 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1)}%`;
}

export function formatCount(value: unknown): string {
  const v = num(value);
  return v === null ? '0' : String(Math.round(v));
}

function field(name: string, label: string, value: string): string {
  return (
    `<span class="gzl-field"><span class="gzl-field-label">${escapeHtml(label)}</span> ` +
    `<span class="gzl-field-value" data-field="${escapeHtml(name)}">${escapeHtml(value)}</span></span>`
  );
}

function button(action: string, provider: string, instance: string, text: string, title: string) {
  return (
    `<button type="button" class="gzl-action jp-mod-styled" data-action="${escapeHtml(action)}" ` +
    `data-provider="${escapeHtml(provider)}" data-instance="${escapeHtml(instance)}" ` +
    `title="${escapeHtml(title)}">${escapeHtml(text)}</button>`
  );
}

/** One instance card with its metrics and action buttons. */
export function renderInstance(provider: string, inst: IInstanceStatus): string {
  const level = instanceLevel(inst);
  const id = instanceId(inst);
  const enabled = inst.enabled !== false && inst.status !== 'drained';
  const hasTokens = 'tokens_per_s' in inst;
  const hasRuns = 'runs' in inst;
  const actions: string[] = [];
  if (enabled && inst.status !== 'draining') {
    actions.push(button('drain', provider, id, 'Drain', 'Stop routing new calls here'));
  } else {
    actions.push(button('enable', provider, id, 'Enable', 'Route calls here again'));
  }
  if (inst.breaker && inst.breaker !== 'closed') {
    actions.push(
      button('reset_breaker', provider, id, 'Reset breaker', 'Close the circuit breaker')
    );
  }
  const rows = [
    field('in_flight', 'in flight', formatCount(inst.in_flight)),
    field('requests', 'requests', formatCount(inst.requests)),
    field('success_rate', 'ok', formatRate(inst.success_rate)),
    field('failures', 'failed', formatCount(inst.failures))
  ];
  const latency = [
    field('p50_ms', 'p50', formatMs(inst.p50_ms)),
    field('p95_ms', 'p95', formatMs(inst.p95_ms)),
    field('p99_ms', 'p99', formatMs(inst.p99_ms))
  ];
  if (hasTokens) {
    const t = num(inst.tokens_per_s);
    latency.push(field('tokens_per_s', 'tok/s', t === null ? '–' : t.toFixed(1)));
  }
  if (hasRuns) {
    latency.push(field('runs', 'runs', formatCount(inst.runs)));
    if ('recycled' in inst) {
      latency.push(field('recycled', 'recycled', formatCount(inst.recycled)));
    }
  }
  const err = errorLine(inst);
  const error = err.text
    ? `<div class="gzl-last-error${err.fresh ? '' : ' gzl-error-old'}" data-field="last_error" ` +
      `title="${escapeHtml(err.text)}">${escapeHtml(err.text)}</div>`
    : '';
  const label = inst.label || id;
  // the full name on hover: the endpoint when it holds the id, else both
  const hover = !inst.endpoint ? id : inst.endpoint.includes(id) ? inst.endpoint : `${id} · ${inst.endpoint}`;
  return (
    `<li class="gzl-instance gzl-level-${level}" data-instance="${escapeHtml(id)}" ` +
    `data-status="${escapeHtml(inst.status)}" data-health="${escapeHtml(healthOf(inst))}" ` +
    `data-breaker="${escapeHtml(inst.breaker)}" ` +
    `data-enabled="${enabled}">` +
    `<div class="gzl-instance-head">` +
    `<span class="gzl-badge gzl-status-${escapeHtml(inst.status)}" data-field="status">${escapeHtml(inst.status)}</span>` +
    `<span class="gzl-instance-id" title="${escapeHtml(hover)}">${escapeHtml(label)}</span>` +
    `</div>` +
    `<div class="gzl-instance-sub">` +
    (inst.endpoint
      ? `<span class="gzl-endpoint" title="${escapeHtml(inst.endpoint)}">${escapeHtml(inst.endpoint)}</span>`
      : '') +
    `<span class="gzl-badge gzl-breaker-${escapeHtml(inst.breaker)}" data-field="breaker" ` +
    `title="circuit breaker">${escapeHtml(inst.breaker === 'closed' ? 'breaker closed' : 'breaker ' + inst.breaker.replace('_', '-'))}</span>` +
    (enabled || inst.status === 'drained'
      ? ''
      : `<span class="gzl-badge gzl-disabled" data-field="enabled">disabled</span>`) +
    `</div>` +
    `<div class="gzl-metrics">${rows.join('')}</div>` +
    `<div class="gzl-metrics">${latency.join('')}</div>` +
    error +
    `<div class="gzl-actions">${actions.join('')}</div>` +
    `</li>`
  );
}

function strategySelector(provider: string, current: string, strategies: string[]): string {
  const options = strategies.includes(current) ? strategies : [current, ...strategies];
  return (
    `<select class="gzl-strategy" data-action="strategy" ` +
    `data-provider="${escapeHtml(provider)}" data-field="strategy" title="Load-balancing strategy">` +
    options
      .map(
        o =>
          `<option value="${escapeHtml(o)}"${o === current ? ' selected' : ''}>${escapeHtml(o)}</option>`
      )
      .join('') +
    `</select>`
  );
}

/** One provider: header line with totals, then its instances. */
export function renderProvider(
  name: string,
  p: IProviderStatus,
  strategies?: string[]
): string {
  const s = summarizeProvider(name, p);
  const queue = p.queue?.waiting ? ` · ${p.queue.waiting} queued` : '';
  const header =
    `<div class="gzl-provider-head">` +
    `<span class="gzl-provider-name">${escapeHtml(name)}</span>` +
    `<span class="gzl-provider-kind">${escapeHtml(p.kind || '')}</span>` +
    `<span class="gzl-provider-counts gzl-level-${s.level}" data-field="available">` +
    `${s.healthy}/${s.total} available${s.busy ? `, ${s.busy} busy` : ''}${escapeHtml(queue)}</span>` +
    `</div>` +
    (p.strategy
      ? `<div class="gzl-provider-meta">strategy ` +
        (strategies && strategies.length
          ? strategySelector(name, p.strategy, strategies)
          : `<span data-field="strategy">${escapeHtml(p.strategy)}</span>`) +
        `</div>`
      : '');
  const error = p.error ? `<div class="gzl-last-error">${escapeHtml(p.error)}</div>` : '';
  const instances = (p.instances || []).length
    ? `<ul class="gzl-instances">${p.instances.map(i => renderInstance(name, i)).join('')}</ul>`
    : `<div class="gzl-empty">No instances in this pool.</div>`;
  return (
    `<section class="gzl-provider gzl-level-${s.level}" data-provider="${escapeHtml(name)}">` +
    header +
    error +
    instances +
    `</section>`
  );
}

function hint(text: string, code?: string): string {
  return (
    `<div class="gzl-hint" data-state="hint">${escapeHtml(text)}` +
    (code ? ` <code class="gzl-load-hint">${escapeHtml(code)}</code>` : '') +
    `</div>`
  );
}

/** The whole sidebar body for a view state. */
export function renderView(state: ViewState): string {
  switch (state.kind) {
    case 'no-notebook':
      return `<div class="gzl-body" data-state="no-notebook">${hint('Open a notebook to see its Gleitzeit pools.')}</div>`;
    case 'no-kernel':
      return `<div class="gzl-body" data-state="no-kernel">${hint(`${state.notebook}: no kernel running.`)}</div>`;
    case 'connecting':
      return `<div class="gzl-body" data-state="connecting">${hint(`${state.notebook}: connecting to the kernel…`)}</div>`;
    case 'not-loaded':
      return (
        `<div class="gzl-body" data-state="not-loaded">` +
        `<div class="gzl-notebook">${escapeHtml(state.notebook)}</div>` +
        hint('Gleitzeit is not loaded in this kernel. Run', LOAD_HINT) +
        `</div>`
      );
    case 'live': {
      const snap = state.snapshot;
      const names = snap ? Object.keys(snap.providers).sort() : [];
      const message = state.message
        ? `<div class="gzl-message ${state.message.ok ? 'gzl-ok' : 'gzl-failed'}" data-field="message">${escapeHtml(state.message.text)}</div>`
        : '';
      const stale = state.stale
        ? `<div class="gzl-stale" data-field="stale">No update from the kernel for a while (is it busy in C code?).</div>`
        : '';
      const body = !snap
        ? hint('Waiting for the first snapshot…')
        : names.length
          ? names.map(n => renderProvider(n, snap.providers[n], snap.strategies)).join('')
          : hint('Gleitzeit is loaded. No pool yet: run a %%llm or %%sandbox cell.');
      return (
        `<div class="gzl-body" data-state="live">` +
        `<div class="gzl-notebook">${escapeHtml(state.notebook)}</div>` +
        stale +
        message +
        body +
        `</div>`
      );
    }
  }
}
