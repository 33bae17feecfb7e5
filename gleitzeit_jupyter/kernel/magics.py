"""The IPython magics: ``%%llm``, ``%llm``, ``%%sandbox``, ``%gleitzeit``.

The magic methods only parse (IPython's magic_arguments, so ``%%llm?`` prints real help) and
delegate to plain functions in :mod:`.llm`, :mod:`.batch`, :mod:`.sandbox_cell` and
:mod:`.admin`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from ..hub.errors import HubError
from . import (
    admin,
    llm,
    llm_args,
    llm_map,
    llm_tools,
    sandbox_cell,
    sandbox_install,
    tool_loop,
)
from .error_log import ErrorLog
from .interpolate import interpolate
from .llm_schema import SchemaError
from .magic_options import names, parse, split_line_options
from .render import cell_error
from .runtime import Gleitzeit, get_runtime

__all__ = ["GleitzeitMagics", "split_line_options"]


@magics_class
class GleitzeitMagics(Magics):
    """Magics of gleitzeit-jupyter; state shared by the magics lives here."""

    def __init__(self, shell: Any, config: Gleitzeit) -> None:
        super().__init__(shell)
        self.cfg = config
        self.chats = llm.ChatStore()
        # Cells whose -f code answer was already offered as the next cell: a rerun of the
        # same cell must not add one more cell every time.
        self.offered: set[str] = set()
        # Tracebacks of failed cells for {Err} / {Err[N]}; fed by the post_run_cell event.
        self.errors = ErrorLog(shell)

    # ------------------------------------------------------------------ helpers
    @property
    def runtime(self) -> Any:
        return get_runtime(self.cfg)

    def _ns(self) -> dict[str, Any]:
        return self.shell.user_ns  # type: ignore[no-any-return]

    def _interpolate(self, text: str, context: str = "%%llm") -> str:
        try:
            return interpolate(text, self._ns(), errors=self.errors)
        except HubError as exc:
            raise cell_error(exc, context=context) from None

    def _cell_key(self, line: str, cell: str) -> str:
        # JupyterLab sends the cell's id with each execute request; elsewhere the source
        # text identifies "the same cell run again".
        cell_id = None
        try:
            parent = self.shell.kernel.get_parent()  # type: ignore[union-attr]
            cell_id = (parent or {}).get("metadata", {}).get("cellId")
        except Exception:
            cell_id = None
        basis = f"id:{cell_id}" if cell_id else f"src:{line}\n{cell}"
        return hashlib.sha1(basis.encode()).hexdigest()

    def _llm_options(self, args: Any) -> llm.LlmOptions:
        if args.output is not None and not args.output.isidentifier():
            # Checked before the call: a typo should not cost a generation.
            raise UsageError(f"-o {args.output!r} is not a valid Python variable name")
        timeout = self.cfg.request_timeout or None
        try:
            extras = llm_args.namespace_options(args, self._ns())
        except HubError as exc:
            raise cell_error(exc, context="%%llm") from None
        return llm.LlmOptions(
            model=args.model,
            system=args.system,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            out=args.output,
            chat=args.chat,
            stream=not args.no_stream,
            instance=args.instance,
            strategy=args.strategy,
            timeout=timeout,
            **extras,
        )

    # ------------------------------------------------------------------ %%llm / %llm
    @line_cell_magic
    # IPython would expand {name} and $name on the magic's line itself: a line prompt and
    # --image {column} are ours to read (code spans, --raw), not IPython's.
    @no_var_expand
    @magic_arguments()
    @argument("-m", "--model", help="model name (default: Gleitzeit.default_model)")
    @argument("-s", "--system", help="system prompt")
    @argument("-t", "--temperature", type=llm_args.temperature, help="sampling temperature, 0 to 2")
    @argument(
        "--max-tokens",
        type=llm_args.at_least_one,
        metavar="N",
        help="upper bound of generated tokens (num_predict), at least 1",
    )
    @argument(
        "-f",
        "--format",
        default="markdown",
        choices=llm.FORMATS,
        help="markdown (default) | text | code (code block, offered as the next cell)"
        " | json (parsed into a Python object)",
    )
    @argument(
        "--schema",
        metavar="NAME",
        help="structured answer (implies -f json): NAME is a Pydantic model, dataclass,"
        " TypedDict or JSON-schema dict; sent as Ollama's format, the answer is validated into"
        " it (with --map: a DataFrame, one column per field)",
    )
    @argument(
        "--image",
        action="append",
        metavar="X",
        help="repeatable; for vision models: a variable holding a path, bytes, PIL image or"
        " matplotlib figure, or a file path; with --map, {column} is each row's path or bytes",
    )
    @argument(
        "--think",
        nargs="?",
        const=True,
        choices=llm_args.THINK_LEVELS,
        metavar="LEVEL",
        help="thinking models: reasoning shown in a collapsed section above the answer;"
        " LEVEL low|medium|high (bare --think: on); -o's text answer has it on .thinking",
    )
    @argument(
        "--raw",
        action="store_true",
        help="send the prompt exactly as written: no {name} / {Err} interpolation anywhere",
    )
    @argument("-o", "--output", metavar="VAR", help="store the answer in this variable")
    @argument("--chat", metavar="SESSION", help="continue the named conversation")
    @argument("--no-stream", action="store_true", help="show the answer only when complete")
    @argument("--instance", metavar="ID", help="send to this instance only")
    @argument(
        "--strategy",
        type=llm_args.strategy_name,
        metavar="S",
        help="load-balancing strategy for this call: " + ", ".join(llm_args.STRATEGIES),
    )
    @argument(
        "--map",
        metavar="EXPR",
        dest="map_expr",
        help="batch: run the template (the cell, or the rest of the line, which returns the"
        " result) once per item/row of EXPR (DataFrame, Series, list, dict)",
    )
    @argument(
        "--concurrency",
        type=llm_args.at_least_one,
        metavar="N",
        help="--map: calls in flight at once, at least 1 (default: Gleitzeit.map_concurrency)",
    )
    @argument(
        "--tools",
        type=llm_tools.tool_names,
        metavar="f,g|sandbox",
        help="let the model call these kernel functions (schema from type hints and"
        " docstring); 'sandbox' adds a python tool that runs code in the sandbox pool",
    )
    @argument(
        "--max-steps",
        type=llm_args.at_least_one,
        metavar="N",
        help=f"--tools: model replies at most, at least 1 (default {tool_loop.DEFAULT_MAX_STEPS})",
    )
    @argument("prompt", nargs="*", help="%%llm PROMPT (line form); %%llm models lists models")
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask the Ollama pool. The cell (or the rest of the line) is the prompt.

        ``{name}``, ``{name.attr}``, ``{In[3]}``, ``{Out[3]}`` are replaced from the notebook's
        variables, ``{Err}`` by the traceback of the last failed cell and ``{Err[3]}`` by
        cell 3's; an undefined name is an error. Text inside fenced code blocks (``` or ~~~)
        and inline `code` spans is never interpolated, so pasted code is sent as written;
        other brace text is left alone and ``{{`` writes a literal brace. ``--raw`` sends the
        whole prompt exactly as written.
        The answer streams into the output and renders as Markdown; a footer shows model,
        instance, latency and tokens/s. ``%llm PROMPT`` returns the text;
        ``%llm models`` lists the pool's models.
        ``--tools f,g`` lets the model call those kernel functions (each call is shown; an
        exception is told to the model); ``--tools sandbox`` gives it a ``python`` tool that
        runs code in the sandbox, never in the kernel; ``--max-steps`` bounds the loop.
        """
        if cell is None:
            return self._llm_line(line)
        args = parse(self.llm, line)
        if args.prompt:
            raise UsageError(
                "%%llm takes its prompt from the cell body; put only options on the first line"
            )
        opts = self._llm_options(args)
        if args.map_expr:
            return llm_map.run_map(
                self.shell,
                lambda: self.runtime,
                args,
                opts,
                cell,
                concurrency=self.cfg.map_concurrency,
                default_model=self.cfg.default_model,
            )
        if args.concurrency is not None:
            raise UsageError("--concurrency only applies with --map")
        prompt = cell.strip("\n") if args.raw else self._interpolate(cell.strip("\n"))
        if not prompt.strip():
            raise UsageError("%%llm: the cell is empty; write the prompt below the %%llm line")
        rt = self.runtime
        try:
            result = self._ask(
                args,
                rt,
                prompt,
                opts,
                default_model=self.cfg.default_model,
                chats=self.chats,
                interval=self.cfg.stream_interval,
                show=True,
                hosts=list(self.cfg.ollama_hosts),
            )
        except SchemaError as exc:
            llm.store(self._ns(), opts.out, exc)  # the raw answer stays reachable: VAR.raw
            raise
        if not opts.stream:
            llm.show_result(opts, result)
        llm.print_footer(result)
        llm.store(self._ns(), opts.out, result.value)
        if opts.fmt == "code":
            key = self._cell_key(line, cell)
            if key not in self.offered:
                self.offered.add(key)
                self.shell.set_next_input(result.value, replace=False)
        return None

    def _llm_line(self, line: str) -> Any:
        optstr, prompt = split_line_options(line, self.llm.parser)
        args = parse(self.llm, optstr)
        rt = self.runtime
        if prompt.strip() == "models" and not optstr:
            return llm.models_frame(rt, hosts=list(self.cfg.ollama_hosts))
        if not prompt.strip():
            raise UsageError("%llm PROMPT: nothing to ask (usage: %llm [options] PROMPT)")
        opts = self._llm_options(args)
        if args.map_expr:
            # The rest of the line is the per-row template; the Series (or DataFrame) is
            # returned, so `df["y"] = %llm --map df ...` fits in the cell that builds df.
            return llm_map.run_map(
                self.shell,
                lambda: self.runtime,
                args,
                opts,
                prompt,
                concurrency=self.cfg.map_concurrency,
                default_model=self.cfg.default_model,
                show=False,
            )
        try:
            result = self._ask(
                args,
                rt,
                prompt if args.raw else self._interpolate(prompt, "%llm"),
                opts,
                default_model=self.cfg.default_model,
                chats=self.chats,
                show=False,
                hosts=list(self.cfg.ollama_hosts),
                context="%llm",
            )
        except SchemaError as exc:
            llm.store(self._ns(), opts.out, exc)  # the raw answer stays reachable: VAR.raw
            raise
        llm.store(self._ns(), opts.out, result.value)
        return result.value

    def _ask(self, args: Any, rt: Any, prompt: str, opts: llm.LlmOptions, **kw: Any) -> Any:
        """One answer: plain, or through the tool loop with --tools."""
        if not args.tools:
            if args.max_steps is not None:
                raise UsageError("--max-steps only applies with --tools")
            return llm.ask(rt, prompt, opts, **kw)
        context = kw.get("context", "%%llm")
        try:
            tools = tool_loop.build_tools(
                args.tools, self._ns(), rt, sandbox_timeout=self.cfg.sandbox_timeout or None
            )
        except HubError as exc:
            raise cell_error(exc, context=context) from None
        steps = args.max_steps or tool_loop.DEFAULT_MAX_STEPS
        return tool_loop.ask_with_tools(rt, prompt, opts, tools, max_steps=steps, **kw)

    # ------------------------------------------------------------------ %%sandbox
    @line_cell_magic
    @magic_arguments()
    @argument("--timeout", type=float, metavar="S", help="seconds before the run is killed")
    @argument("--mem", metavar="SIZE", help="memory limit of the container, e.g. 512m, 2g")
    @argument(
        "--network",
        nargs="?",
        const=True,
        default=False,
        metavar="NAME",
        help="allow network access (off by default): docker's bridge, or the docker network NAME",
    )
    @argument("--session", metavar="NAME", help="keep variables between cells of this session")
    @argument("--in", dest="inputs", metavar="a,b", help="kernel variables sent in")
    @argument("--out", dest="outputs", metavar="c,d", help="sandbox variables brought back")
    @argument("-o", "--output", metavar="VAR", help="store the run's result dict here")
    @argument("--image", metavar="IMG", help="sandbox image (a pool of its own)")
    @argument(
        "--upload",
        action="append",
        metavar="PATH",
        help="copy a file, directory or glob from the kernel's cwd into the run's (repeatable)",
    )
    @argument(
        "--download",
        action="append",
        metavar="GLOB",
        help="copy files the run wrote matching GLOB back into the kernel's cwd (repeatable)",
    )
    @argument("--reset", action="store_true", help="line form: forget --session NAME's state")
    @argument("code", nargs="*", help="%%sandbox CODE (line form): run this one line")
    def sandbox(self, line: str, cell: str | None = None) -> Any:
        """Run the cell in a warm, hardened Docker container from the sandbox pool.

        stdout/stderr appear in the cell output, rich results (DataFrames, matplotlib
        figures) display like a local cell, ``--in``/``--out`` move variables in safe formats
        (JSON, Arrow, raw arrays; never pickle). An exception inside the sandbox prints its
        traceback, marked as coming from the sandbox.
        """
        if cell is None:
            optstr, code = split_line_options(line, self.sandbox.parser)
            args = parse(self.sandbox, optstr)
            if args.reset:
                if not args.session or code:
                    raise UsageError("usage: %sandbox --reset --session NAME")
                return sandbox_cell.reset_session(self.runtime, args.session)
            if not code.strip():
                raise UsageError("%sandbox CODE: nothing to run (usage: %sandbox [options] CODE)")
            words = code.split()
            if words[0] == "install" and not optstr:
                sandbox_install.install(self.runtime, self.cfg, words[1:])
                return None
            cell = code
        else:
            args = parse(self.sandbox, line)
            if args.code:
                raise UsageError(
                    "%%sandbox takes its code from the cell body; put only options on the first"
                    " line"
                )
        rt = self.runtime
        return sandbox_cell.run_cell(
            rt,
            cell,
            self._ns(),
            timeout=args.timeout if args.timeout is not None else self.cfg.sandbox_timeout,
            mem=args.mem,
            network=args.network,
            session=args.session,
            inputs=names(args.inputs),
            outputs=names(args.outputs),
            out_var=args.output,
            image=args.image,
            upload=args.upload,
            download=args.download,
        )

    # ------------------------------------------------------------------ %gleitzeit
    @line_magic
    @magic_arguments()
    @argument("--export", metavar="PATH", help="metrics: write to PATH.csv or PATH.parquet")
    @argument("--provider", metavar="NAME", help="strategy: only this pool (default: all)")
    @argument(
        "command",
        nargs="*",
        help="status | metrics | add ollama URL | add openai URL | add sandbox | remove ID |"
        " drain ID | enable ID | reset ID | strategy NAME | reset | save PATH | load PATH",
    )
    def gleitzeit(self, line: str) -> Any:
        """Inspect and manage the pools.

        status: the pools and their instances; metrics: one row per instance (and --export);
        add ollama URL / add openai URL / add sandbox: grow a pool; remove ID: drain and
        remove an instance; drain ID / enable ID: take an instance out of rotation and back
        (the sidebar's buttons); reset ID: close its circuit breaker; strategy NAME: switch
        load balancing; reset: stop every pool (they restart on next
        use, with the current %config) and forget chat sessions; save PATH / load PATH: keep
        the pools and their metrics in a SQLite file across kernel restarts.
        """
        args = parse(self.gleitzeit, line)
        words = list(args.command) or ["status"]
        return admin.dispatch(self, words, export=args.export, provider=args.provider)
