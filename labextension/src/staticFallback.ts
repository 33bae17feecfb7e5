import { Cell, CodeCell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { MimeModel } from '@jupyterlab/rendermime';

/** MIME type of a widget view in an output bundle. */
export const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
/** Attribute the kernel puts on the static picture it sends beside a widget. */
export const STATIC_MARK = 'data-gleitzeit-static';
/** What the widget renderer writes when the widget's model is gone (kernel restarted). */
const MISSING = 'Error displaying widget: model not found';
const LOADING = 'Loading widget...';
/** A widget still "loading" this long (no kernel to restore it from) gets the picture. */
const LOADING_GRACE_MS = 3000;

/**
 * Static pictures for Gleitzeit widgets whose model is gone.
 *
 * Panels and progress bars are displayed with `text/html` and `text/plain` beside the
 * widget view (gleitzeit_jupyter.kernel.widgets.display). nbconvert and GitHub fall back to
 * them by themselves; JupyterLab's widget renderer does not: it writes "Error displaying
 * widget: model not found" into the output. This watches notebooks and puts the picture
 * there instead, rendered by the notebook's own `text/html` renderer (so it is sanitized
 * like any untrusted output). A widget that does come alive later replaces the picture.
 */
export class StaticFallback {
  constructor(tracker: INotebookTracker) {
    tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    tracker.forEach(panel => this._watch(panel));
  }

  private _watch(panel: NotebookPanel): void {
    const observer = new MutationObserver(() => this._schedule(panel, 200));
    observer.observe(panel.content.node, { childList: true, subtree: true, characterData: true });
    panel.disposed.connect(() => observer.disconnect());
    this._schedule(panel, 0);
  }

  private _schedule(panel: NotebookPanel, delay: number): void {
    if (this._pending.has(panel)) {
      return;
    }
    this._pending.add(panel);
    window.setTimeout(() => {
      this._pending.delete(panel);
      if (!panel.isDisposed) {
        this._scan(panel);
      }
    }, delay);
  }

  private _scan(panel: NotebookPanel): void {
    let again = false;
    for (const cell of panel.content.widgets as readonly Cell[]) {
      if (!(cell instanceof CodeCell)) {
        continue;
      }
      const area = cell.outputArea;
      const outputs = area.model;
      for (let i = 0; i < outputs.length && i < area.widgets.length; i++) {
        const model = outputs.get(i);
        const html = model.data['text/html'];
        if (!(WIDGET_MIME in model.data) || typeof html !== 'string' || !html.includes(STATIC_MARK)) {
          continue;
        }
        const node = area.widgets[i].node.querySelector('.jp-OutputArea-output') as HTMLElement | null;
        if (!node || node.querySelector(`[${STATIC_MARK}]`)) {
          continue;
        }
        const text = (node.textContent || '').trim();
        if (text === LOADING) {
          const since = this._loading.get(node) ?? Date.now();
          this._loading.set(node, since);
          if (Date.now() - since < LOADING_GRACE_MS) {
            again = true;
            continue;
          }
        } else if (text !== MISSING) {
          continue;
        }
        void this._show(panel, node, html, model.trusted);
      }
    }
    if (again) {
      this._schedule(panel, LOADING_GRACE_MS);
    }
  }

  private async _show(
    panel: NotebookPanel,
    node: HTMLElement,
    html: string,
    trusted: boolean
  ): Promise<void> {
    const renderer = panel.content.rendermime.createRenderer('text/html');
    await renderer.renderModel(new MimeModel({ data: { 'text/html': html }, trusted }));
    const text = (node.textContent || '').trim();
    if (text !== MISSING && text !== LOADING) {
      return; // the widget came alive meanwhile
    }
    node.textContent = '';
    node.dataset.gleitzeitFallback = 'static';
    node.appendChild(renderer.node);
  }

  private _pending = new Set<NotebookPanel>();
  private _loading = new WeakMap<HTMLElement, number>();
}
