import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { GleitzeitModel } from './model';
import { renderView } from './render';

import iconSvg from '../style/icons/gleitzeit.svg';

export const gleitzeitIcon = new LabIcon({ name: 'gleitzeit-jupyter:icon', svgstr: iconSvg });

export const SIDEBAR_ID = 'gleitzeit-sidebar';

/** The sidebar: every provider and instance of the active notebook's kernel. */
export class GleitzeitSidebar extends Widget {
  constructor(model: GleitzeitModel) {
    super();
    this.model = model;
    this.id = SIDEBAR_ID;
    this.addClass('gzl-sidebar');
    this.title.icon = gleitzeitIcon;
    this.title.caption = 'Gleitzeit pools';
    const header = document.createElement('div');
    header.className = 'gzl-header';
    header.innerHTML =
      '<span class="gzl-title">Gleitzeit</span>' +
      '<button type="button" class="gzl-refresh jp-mod-styled" data-action="refresh" title="Ask the kernel for a snapshot now">Refresh</button>';
    this._content = document.createElement('div');
    this._content.className = 'gzl-content';
    this.node.appendChild(header);
    this.node.appendChild(this._content);
    this.node.addEventListener('click', this._onClick);
    this.node.addEventListener('change', this._onChange);
    model.changed.connect(this.update, this);
    this.update();
  }

  readonly model: GleitzeitModel;

  protected onUpdateRequest(): void {
    const html = renderView(this.model.view());
    // unchanged snapshots do not touch the DOM (keeps hover / focus on buttons)
    if (html !== this._html) {
      this._html = html;
      this._content.innerHTML = html;
    }
  }

  dispose(): void {
    this.node.removeEventListener('click', this._onClick);
    this.node.removeEventListener('change', this._onChange);
    super.dispose();
  }

  private _onChange = (event: Event): void => {
    const target = event.target as HTMLSelectElement;
    if (target.dataset?.action === 'strategy' && target.dataset.provider) {
      this.model.action(target.dataset.provider, 'strategy', undefined, target.value);
    }
  };

  private _onClick = (event: MouseEvent): void => {
    const target = (event.target as HTMLElement).closest(
      'button[data-action]'
    ) as HTMLButtonElement | null;
    if (!target) {
      return;
    }
    const action = target.dataset.action!;
    if (action === 'refresh') {
      this.model.refresh();
      return;
    }
    const provider = target.dataset.provider;
    if (provider) {
      target.disabled = true;
      this.model.action(provider, action, target.dataset.instance);
    }
  };

  private _content: HTMLDivElement;
  private _html = '';
}

/** Status-bar item, e.g. "LLM 3/3 · Sandbox 5/5, 2 busy"; amber/red on trouble. */
export class GleitzeitStatus extends Widget {
  constructor(model: GleitzeitModel, onClick: () => void) {
    super();
    this.model = model;
    this.addClass('gzl-status');
    this.addClass('jp-StatusBar-TextItem');
    this.node.setAttribute('role', 'button');
    this._icon = document.createElement('span');
    this._icon.className = 'gzl-status-icon';
    gleitzeitIcon.element({ container: this._icon, tag: 'span', height: '14px', width: '14px' });
    this._text = document.createElement('span');
    this._text.className = 'gzl-status-text';
    this.node.appendChild(this._icon);
    this.node.appendChild(this._text);
    this.node.addEventListener('click', onClick);
    model.changed.connect(this.update, this);
    this.update();
  }

  readonly model: GleitzeitModel;

  protected onUpdateRequest(): void {
    const s = this.model.summary();
    this._text.textContent = s.text;
    this.node.title = s.title;
    this.node.dataset.level = s.level;
    this.node.dataset.state = s.state;
    for (const level of ['ok', 'warn', 'error', 'idle']) {
      this.node.classList.toggle(`gzl-level-${level}`, s.level === level);
    }
  }

  private _icon: HTMLSpanElement;
  private _text: HTMLSpanElement;
}
