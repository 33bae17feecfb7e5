import { describe, expect, it } from 'vitest';

import {
  IInstanceStatus,
  IProviderStatus,
  ISnapshot,
  LOAD_HINT,
  escapeHtml,
  formatAge,
  formatMs,
  formatRate,
  renderInstance,
  renderView,
  summarize
} from '../src/render';

function inst(id: string, extra: Partial<IInstanceStatus> = {}): IInstanceStatus {
  return {
    id,
    endpoint: `http://127.0.0.1:1/${id}`,
    status: 'healthy',
    breaker: 'closed',
    in_flight: 0,
    enabled: true,
    requests: 10,
    successes: 9,
    failures: 1,
    success_rate: 0.9,
    p50_ms: 12.5,
    p95_ms: 250,
    p99_ms: 1500,
    mean_ms: 40,
    last_error: null,
    ...extra
  };
}

function provider(name: string, kind: string, instances: IInstanceStatus[]): IProviderStatus {
  return { name, kind, strategy: 'least_loaded', initialized: true, queue: { waiting: 0 }, instances };
}

function snap(providers: Record<string, IProviderStatus>): ISnapshot {
  return { type: 'snapshot', providers };
}

/** Instance cards as {id: {field: text}} parsed back out of the HTML. */
function fields(html: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  const cards = html.split('<li class="gzl-instance').slice(1);
  for (const card of cards) {
    const id = /data-instance="([^"]*)"/.exec(card)![1];
    out[id] = {};
    for (const m of card.matchAll(/data-field="([^"]+)"[^>]*>([^<]*)</g)) {
      out[id][m[1]] = m[2];
    }
  }
  return out;
}

describe('summarize (status bar)', () => {
  it('counts available instances per provider with short labels', () => {
    const s = summarize(
      snap({
        ollama: provider('ollama', 'OllamaProvider', [inst('a'), inst('b'), inst('c')]),
        sandbox: provider('sandbox', 'PythonProvider', [
          inst('s1', { in_flight: 1 }),
          inst('s2', { in_flight: 1 }),
          inst('s3'),
          inst('s4'),
          inst('s5')
        ])
      })
    );
    expect(s.text).toBe('LLM 3/3 · Sandbox 5/5, 2 busy');
    expect(s.level).toBe('ok');
  });

  it('turns amber when an instance is unhealthy', () => {
    const s = summarize(
      snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a'), inst('b', { status: 'unhealthy' })]) })
    );
    expect(s.text).toBe('LLM 1/2');
    expect(s.level).toBe('warn');
  });

  it('turns red when a breaker is open or nothing is available', () => {
    const open = summarize(
      snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a'), inst('b', { breaker: 'open' })]) })
    );
    expect(open.level).toBe('error');
    expect(open.text).toBe('LLM 1/2');
    const none = summarize(
      snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a', { status: 'unhealthy' })]) })
    );
    expect(none.level).toBe('error');
  });

  it('does not count drained instances as available', () => {
    const s = summarize(
      snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a'), inst('b', { enabled: false })]) })
    );
    expect(s.text).toBe('LLM 1/2');
  });

  it('handles no snapshot and no providers', () => {
    expect(summarize(null).level).toBe('idle');
    expect(summarize(snap({})).text).toBe('Gleitzeit: no pools');
  });
});

describe('renderView (sidebar)', () => {
  it('shows the load hint for a kernel without the extension', () => {
    const html = renderView({ kind: 'not-loaded', notebook: 'a.ipynb' });
    expect(html).toContain(LOAD_HINT);
    expect(html).toContain('data-state="not-loaded"');
  });

  it('renders every instance with health, breaker and metrics', () => {
    const html = renderView({
      kind: 'live',
      notebook: 'a.ipynb',
      snapshot: snap({
        ollama: provider('ollama', 'OllamaProvider', [
          inst('ollama-0', { tokens_per_s: 42.25 }),
          inst('ollama-1', { status: 'unhealthy', breaker: 'open', last_error: 'refused', tokens_per_s: null })
        ])
      })
    });
    const f = fields(html);
    expect(Object.keys(f)).toEqual(['ollama-0', 'ollama-1']);
    expect(f['ollama-0']).toMatchObject({
      status: 'healthy',
      breaker: 'breaker closed',
      requests: '10',
      in_flight: '0',
      success_rate: '90.0%',
      p50_ms: '13 ms',
      p95_ms: '250 ms',
      p99_ms: '1.5 s',
      tokens_per_s: '42.3'
    });
    expect(f['ollama-1']).toMatchObject({ status: 'unhealthy', breaker: 'breaker open', last_error: 'refused' });
    expect(html).toContain('data-field="available">1/2 available');
  });

  it('says why a health check fails when no call has failed', () => {
    const html = renderView({
      kind: 'live',
      notebook: 'a.ipynb',
      snapshot: snap({
        ollama: provider('ollama', 'OllamaProvider', [
          inst('down', { status: 'unhealthy', health_error: 'connection refused' }),
          inst('up', { health_error: 'stale text from an old failure' })
        ])
      })
    });
    const f = fields(html);
    expect(f['down'].last_error).toBe('health check: connection refused');
    expect(f['up'].last_error).toBeUndefined();
  });

  it('reads the hub status() shape: `instance` key, drained status with health', () => {
    const row = { ...inst('x'), id: undefined, instance: 'ollama-7', status: 'drained', health: 'unhealthy', enabled: false };
    const html = renderInstance('ollama', row);
    expect(html).toContain('data-instance="ollama-7"');
    expect(html).toContain('data-health="unhealthy"');
    expect(html).toContain('data-action="enable"');
    expect(html).toContain('gzl-level-warn');
    const s = summarize(snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a'), row]) }));
    expect(s.text).toBe('LLM 1/2');
    expect(s.level).toBe('warn');
  });

  it('shows runs for sandbox instances and no tokens/s', () => {
    const html = renderInstance('sandbox', inst('box-1', { runs: 7, recycled: 2 }));
    expect(fields(html)['box-1']).toMatchObject({ runs: '7', recycled: '2' });
    expect(html).not.toContain('tokens_per_s');
  });

  it('offers drain / enable / reset-breaker according to the state', () => {
    const healthy = renderInstance('ollama', inst('a'));
    expect(healthy).toContain('data-action="drain"');
    expect(healthy).not.toContain('data-action="enable"');
    expect(healthy).not.toContain('data-action="reset_breaker"');
    const drained = renderInstance('ollama', inst('a', { enabled: false, status: 'draining', breaker: 'open' }));
    expect(drained).toContain('data-action="enable"');
    expect(drained).toContain('data-action="reset_breaker"');
    expect(drained).not.toContain('data-action="drain"');
    expect(drained).toContain('data-provider="ollama" data-instance="a"');
  });

  it('escapes everything that comes from the kernel', () => {
    const html = renderView({
      kind: 'live',
      notebook: '<b>.ipynb',
      snapshot: snap({
        'x<y': provider('x<y', '<script>', [inst('"><img src=x onerror=alert(1)>', { last_error: '<i>boom</i>' })])
      })
    });
    expect(html).not.toContain('<img');
    expect(html).not.toContain('<script>');
    expect(html).not.toContain('<i>');
    expect(html).toContain('&lt;i&gt;boom&lt;/i&gt;');
  });

  it('offers a strategy selector when the kernel lists the strategies', () => {
    const html = renderView({
      kind: 'live',
      notebook: 'a.ipynb',
      snapshot: {
        ...snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a')]) }),
        strategies: ['round_robin', 'least_loaded']
      }
    });
    expect(html).toContain('<select class="gzl-strategy');
    expect(html).toContain('data-action="strategy" data-provider="ollama"');
    expect(html).toContain('<option value="least_loaded" selected>');
    expect(html).toContain('<option value="round_robin">');
    const plain = renderView({
      kind: 'live',
      notebook: 'a.ipynb',
      snapshot: snap({ ollama: provider('ollama', 'OllamaProvider', [inst('a')]) })
    });
    expect(plain).not.toContain('<select');
    expect(plain).toContain('<span data-field="strategy">least_loaded</span>');
  });

  it('says so when the extension is loaded but no pool exists yet', () => {
    const html = renderView({ kind: 'live', notebook: 'a.ipynb', snapshot: snap({}) });
    expect(html).toContain('No pool yet');
  });

  it('shows action results and staleness', () => {
    const html = renderView({
      kind: 'live',
      notebook: 'a.ipynb',
      snapshot: snap({}),
      stale: true,
      message: { ok: false, text: 'drain failed: no such instance' }
    });
    expect(html).toContain('data-field="stale"');
    expect(html).toContain('gzl-failed');
    expect(html).toContain('drain failed: no such instance');
  });
});

describe('formatting', () => {
  it('formats latencies, rates and escapes', () => {
    expect(formatMs(null)).toBe('–');
    expect(formatMs(3.21)).toBe('3.2 ms');
    expect(formatMs(12345)).toBe('12 s');
    expect(formatRate(1)).toBe('100%');
    expect(formatRate(0)).toBe('0%');
    expect(formatRate(null)).toBe('–');
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });
});

describe('one snapshot, one count', () => {
  it('takes availability and the count from the hub', () => {
    const p = provider('ollama', 'OllamaProvider', [
      inst('127.0.0.1:11434', { label: '…:11434', available: true }),
      // healthy by its last check, but its breaker is open: the hub says unavailable
      inst('127.0.0.1:11435', { label: '…:11435', available: false, breaker: 'open' }),
      inst('127.0.0.1:11436', { label: '…:11436', available: true, breaker: 'half_open' })
    ]);
    p.totals = { available: 2, instances: 3 };
    const s = summarize(snap({ ollama: p }));
    expect(s.text).toBe('LLM 2/3');
    expect(s.level).toBe('error');
    const html = renderView({ kind: 'live', notebook: 'n.ipynb', snapshot: snap({ ollama: p }) });
    expect(html).toContain('data-field="available">2/3 available');
    expect(html).toContain('title="http://127.0.0.1:1/127.0.0.1:11435">…:11435<');
  });

  it('writes how old an error is and stops alarming once it is old', () => {
    const fresh = renderInstance(
      'ollama',
      inst('a', { last_error: 'connection refused', last_error_age_s: 12.2, error_fresh: true })
    );
    expect(fresh).toContain('12 s ago: connection refused');
    expect(fresh).not.toContain('gzl-error-old');
    const old = renderInstance(
      'ollama',
      inst('a', { last_error: 'connection refused', last_error_age_s: 300, error_fresh: false })
    );
    expect(old).toContain('5 min ago: connection refused');
    expect(old).toContain('gzl-error-old');
    // an unhealthy instance keeps its error coloured, however old
    const down = renderInstance(
      'ollama',
      inst('a', { status: 'unhealthy', last_error: 'x', last_error_age_s: 300, error_fresh: false })
    );
    expect(down).not.toContain('gzl-error-old');
    expect(formatAge(7200)).toBe('2 h ago');
  });
});
