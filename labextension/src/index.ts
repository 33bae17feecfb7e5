import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { GleitzeitModel } from './model';
import { StaticFallback } from './staticFallback';
import { GleitzeitSidebar, GleitzeitStatus, SIDEBAR_ID } from './widgets';

export * from './render';

const OPEN_COMMAND = 'gleitzeit:open-sidebar';

/**
 * Gleitzeit sidebar and status-bar item for the active notebook's kernel.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'gleitzeit-jupyter:plugin',
  description: 'A live view of the Gleitzeit provider pools in the active notebook kernel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const model = new GleitzeitModel(tracker);
    // saved notebooks: the static picture where a panel's widget cannot be restored
    new StaticFallback(tracker);
    const sidebar = new GleitzeitSidebar(model);
    app.shell.add(sidebar, 'right', { rank: 900 });

    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Gleitzeit Pools',
      caption: 'Open the Gleitzeit sidebar',
      execute: () => {
        app.shell.activateById(SIDEBAR_ID);
        model.refresh();
      }
    });
    palette?.addItem({ command: OPEN_COMMAND, category: 'Gleitzeit' });

    if (statusBar) {
      const item = new GleitzeitStatus(model, () => {
        void app.commands.execute(OPEN_COMMAND);
      });
      item.id = 'gleitzeit-status';
      statusBar.registerStatusItem('gleitzeit-jupyter:status', {
        item,
        align: 'left',
        rank: 50
      });
    }
  }
};

export default plugin;
