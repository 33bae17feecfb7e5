import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ISnapshot } from './render';

/** Comm target registered by `gleitzeit_jupyter.kernel.comm`. */
export const TARGET_NAME = 'gleitzeit';

export type LinkState = 'connecting' | 'not-loaded' | 'live' | 'dead';

export interface IActionResult {
  ok: boolean;
  text: string;
  at: number;
}

/**
 * The comm to one kernel.
 *
 * The front end opens a `gleitzeit` comm; a kernel without the target closes it at once
 * ("not-loaded"). When the user loads the extension later, the kernel opens a comm itself
 * (target `gleitzeit` registered here), so the view recovers without any polling. After a
 * kernel restart the link reopens the comm once the kernel is idle again.
 */
export class KernelLink {
  constructor(kernel: Kernel.IKernelConnection) {
    this.kernel = kernel;
    kernel.registerCommTarget(TARGET_NAME, this._onKernelOpen);
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.disposed.connect(this.dispose, this);
    void this.open();
  }

  readonly kernel: Kernel.IKernelConnection;

  get state(): LinkState {
    return this._state;
  }

  get snapshot(): ISnapshot | null {
    return this._snapshot;
  }

  /** Time (ms since epoch, front-end clock) of the last message from the kernel. */
  get lastUpdate(): number {
    return this._lastUpdate;
  }

  get lastResult(): IActionResult | null {
    return this._lastResult;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Open a comm from the front end; the kernel answers with a snapshot or closes it. */
  async open(): Promise<void> {
    if (this._disposed || this._opening) {
      return;
    }
    if (this.kernel.isDisposed || this.kernel.status === 'dead') {
      this._setState('dead');
      return;
    }
    this._opening = true;
    try {
      const comm = this.kernel.createComm(TARGET_NAME);
      this._attach(comm);
      this._setState('connecting');
      const future = comm.open({ type: 'refresh' });
      await future.done;
      if (this._comm === comm && this._state === 'connecting') {
        // the kernel accepted it; the first snapshot is on its way
        this._setState('live');
      }
    } catch (reason) {
      // kernel gone or restarted while opening
      if (this._state === 'connecting') {
        this._setState('not-loaded');
      }
    } finally {
      this._opening = false;
    }
  }

  /** Ask the kernel for a snapshot now. */
  refresh(): void {
    this._send({ type: 'refresh' });
  }

  /** Run a pool action in the kernel (drain / enable / reset_breaker / strategy). */
  action(provider: string, action: string, instance?: string, value?: unknown): boolean {
    return this._send({
      type: 'action',
      provider,
      action,
      instance: instance ?? null,
      value: value ?? null,
      request: ++this._requests
    });
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    const comm = this._comm;
    this._comm = null;
    if (!this.kernel.isDisposed) {
      this.kernel.removeCommTarget(TARGET_NAME, this._onKernelOpen);
      this.kernel.statusChanged.disconnect(this._onStatus, this);
      if (comm && !comm.isDisposed) {
        try {
          comm.close();
        } catch {
          // already closed
        }
      }
    }
    Signal.clearData(this);
  }

  private _send(data: Record<string, unknown>): boolean {
    const comm = this._comm;
    if (!comm || comm.isDisposed || this._state !== 'live') {
      return false;
    }
    try {
      comm.send(data as any);
      return true;
    } catch {
      return false;
    }
  }

  private _attach(comm: Kernel.IComm): void {
    const previous = this._comm;
    this._comm = comm;
    comm.onMsg = msg => this._onMsg(comm, msg);
    comm.onClose = () => this._onClose(comm);
    if (previous && previous !== comm && !previous.isDisposed) {
      previous.onClose = () => undefined;
      try {
        previous.close();
      } catch {
        // ignore
      }
    }
  }

  private _onKernelOpen = (
    comm: Kernel.IComm,
    msg: KernelMessage.ICommOpenMsg
  ): void => {
    // the kernel loaded the extension (or was told to announce itself)
    if (this._disposed) {
      try {
        comm.close();
      } catch {
        // ignore
      }
      return;
    }
    this._attach(comm);
    this._lastUpdate = Date.now();
    this._setState('live');
  };

  private _onMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm) {
      return;
    }
    const data = msg.content.data as any;
    this._lastUpdate = Date.now();
    if (!data || typeof data !== 'object') {
      return;
    }
    switch (data.type) {
      case 'snapshot':
        this._snapshot = data as ISnapshot;
        this._state = 'live';
        break;
      case 'action_result':
      case 'error':
        this._lastResult = {
          ok: !!data.ok,
          text: String(data.message ?? data.type),
          at: Date.now()
        };
        break;
      default:
        break;
    }
    this._changed.emit();
  }

  private _onClose(comm: Kernel.IComm): void {
    if (comm !== this._comm) {
      return;
    }
    this._comm = null;
    this._snapshot = null;
    this._setState(this.kernel.status === 'dead' ? 'dead' : 'not-loaded');
  }

  private _onStatus(kernel: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      // comms are dropped by the kernel connection without a close message
      this._comm = null;
      this._snapshot = null;
      this._awaitingRestart = true;
      this._setState('connecting');
    } else if (status === 'dead') {
      this._comm = null;
      this._setState('dead');
    } else if (status === 'idle' && this._awaitingRestart) {
      this._awaitingRestart = false;
      void this.open();
    }
  }

  private _setState(state: LinkState): void {
    if (this._state !== state) {
      this._state = state;
      this._changed.emit();
    }
  }

  private _comm: Kernel.IComm | null = null;
  private _state: LinkState = 'connecting';
  private _snapshot: ISnapshot | null = null;
  private _lastUpdate = 0;
  private _lastResult: IActionResult | null = null;
  private _requests = 0;
  private _opening = false;
  private _awaitingRestart = false;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}

/** One link per kernel connection, so switching notebooks back and forth is instant. */
export class KernelLinks {
  get(kernel: Kernel.IKernelConnection): KernelLink {
    let link = this._links.get(kernel);
    if (!link || link.isDisposed) {
      link = new KernelLink(kernel);
      this._links.set(kernel, link);
      kernel.disposed.connect(() => {
        this._links.get(kernel)?.dispose();
        this._links.delete(kernel);
      });
    }
    return link;
  }

  private _links = new Map<Kernel.IKernelConnection, KernelLink>();
}
