import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { KernelLink, KernelLinks } from './kernelLink';
import { ISnapshot, ISummary, ViewState, summarize } from './render';

/** Seconds without any message before the live view is flagged as stale. */
const STALE_AFTER_MS = 15000;
/** How long an action result stays visible. */
const RESULT_VISIBLE_MS = 8000;

/**
 * Follows the active notebook and its kernel, and exposes what the sidebar and the status
 * bar render. All data comes from the kernel's `gleitzeit` comm (pushed snapshots).
 */
export class GleitzeitModel {
  constructor(tracker: INotebookTracker) {
    this._tracker = tracker;
    tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._onCurrentChanged();
    // front-end clock only: flags a silent kernel as stale and expires action messages
    this._timer = window.setInterval(() => this._tick(), 2000);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get link(): KernelLink | null {
    return this._link;
  }

  get snapshot(): ISnapshot | null {
    return this._link?.state === 'live' ? this._link.snapshot : null;
  }

  view(): ViewState {
    const panel = this._panel;
    if (!panel) {
      return { kind: 'no-notebook' };
    }
    const notebook = panel.context.path.split('/').pop() || panel.title.label;
    const link = this._link;
    if (!link) {
      const kernel = panel.sessionContext.session?.kernel;
      return kernel ? { kind: 'connecting', notebook } : { kind: 'no-kernel', notebook };
    }
    switch (link.state) {
      case 'connecting':
        return { kind: 'connecting', notebook };
      case 'not-loaded':
        return { kind: 'not-loaded', notebook };
      case 'dead':
        return { kind: 'no-kernel', notebook };
      case 'live': {
        const result = link.lastResult;
        const message =
          result && Date.now() - result.at < RESULT_VISIBLE_MS
            ? { ok: result.ok, text: result.text }
            : null;
        return { kind: 'live', notebook, snapshot: link.snapshot, stale: this._stale, message };
      }
    }
  }

  summary(): ISummary & { state: ViewState['kind'] } {
    const view = this.view();
    if (view.kind === 'live') {
      return { ...summarize(view.snapshot), state: view.kind };
    }
    const text =
      view.kind === 'not-loaded' ? 'Gleitzeit: not loaded' : view.kind === 'connecting' ? 'Gleitzeit…' : 'Gleitzeit';
    const title =
      view.kind === 'not-loaded'
        ? 'Run %load_ext gleitzeit_jupyter in this notebook'
        : 'Gleitzeit pools of the active notebook';
    return { text, title, level: 'idle', providers: [], state: view.kind };
  }

  action(provider: string, action: string, instance?: string, value?: unknown): boolean {
    return this._link?.action(provider, action, instance, value) ?? false;
  }

  refresh(): void {
    this._link?.refresh();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this._tracker.currentChanged.disconnect(this._onCurrentChanged, this);
    Signal.clearData(this);
  }

  private _onCurrentChanged(): void {
    const panel = this._tracker.currentWidget;
    if (panel === this._panel) {
      return;
    }
    if (this._panel) {
      this._panel.sessionContext.kernelChanged.disconnect(this._onKernelChanged, this);
    }
    this._panel = panel;
    if (panel) {
      panel.sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    }
    this._setKernel(panel?.sessionContext.session?.kernel ?? null);
  }

  private _onKernelChanged(): void {
    this._setKernel(this._panel?.sessionContext.session?.kernel ?? null);
  }

  private _setKernel(kernel: Kernel.IKernelConnection | null): void {
    if (this._link) {
      this._link.changed.disconnect(this._onLinkChanged, this);
    }
    this._link = kernel ? this._links.get(kernel) : null;
    if (this._link) {
      this._link.changed.connect(this._onLinkChanged, this);
    }
    this._stale = false;
    this._changed.emit();
  }

  private _onLinkChanged(): void {
    this._stale = false;
    this._changed.emit();
  }

  private _tick(): void {
    const link = this._link;
    let emit = false;
    const stale =
      !!link && link.state === 'live' && link.lastUpdate > 0 && Date.now() - link.lastUpdate > STALE_AFTER_MS;
    if (stale !== this._stale) {
      this._stale = stale;
      emit = true;
    }
    const result = link?.lastResult;
    if (result && !this._expired.has(result) && Date.now() - result.at >= RESULT_VISIBLE_MS) {
      this._expired.add(result);
      emit = true;
    }
    if (emit) {
      this._changed.emit();
    }
  }

  private _tracker: INotebookTracker;
  private _panel: NotebookPanel | null = null;
  private _links = new KernelLinks();
  private _link: KernelLink | null = null;
  private _stale = false;
  private _expired = new WeakSet<object>();
  private _timer: number;
  private _changed = new Signal<this, void>(this);
}
