"""Integrations with other libraries, kept out of bebert's import path until they are needed.

`import bebert_cli` must stay cheap (no torch, no transformers: the CLI's start-up depends on it),
yet `transformers.AutoModel*.from_pretrained(packed_dir)` should work after it. So registering
bebert's quantizer with transformers (`transformers_quantizer.register`) is *deferred*:

- if transformers' quantizer registry (`transformers.quantizers.auto`) is already imported, it is
  registered at once (cheap: everything it needs is loaded);
- otherwise a one-shot import hook waits for that module to be imported (every `from_pretrained`
  imports it first: `modeling_utils` imports it at module level) and registers right after it has
  executed, then removes itself. `import transformers` itself stays lazy: nothing is imported
  early, and nothing happens for programs that never load a transformers model.

Set BEBERT_NO_TRANSFORMERS_HOOK=1 to opt out of the automatic registration;
`bebert_cli.register_with_transformers()` always works explicitly.
"""

from __future__ import annotations

import _thread  # not threading: that costs an import at every CLI start
import os
import sys

from bebert_cli.integrations.notice import registration_failed

_TARGET = "transformers.quantizers.auto"
_QUANTIZER_MODULE = __name__ + ".transformers_quantizer"
_OPT_OUT = "BEBERT_NO_TRANSFORMERS_HOOK"
_lock = _thread.allocate_lock()


def _register_quietly() -> None:
    """Automatic registration: a failure (e.g. a transformers API change) must never break an import."""
    module = sys.modules.get(_QUANTIZER_MODULE)
    if module is not None and not getattr(module, "_DEFINED", False):
        # Someone imported transformers_quantizer directly: its own first lines imported transformers'
        # registry and fired the hook, before there is anything to register. The flag asks the module
        # to register itself at its end (importing it from here would be a circular import).
        module._REGISTER_WHEN_DEFINED = True
        return
    try:
        from bebert_cli.integrations.transformers_quantizer import register

        register()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the user's import must go on
        registration_failed(exc)


class _RegisteringLoader:
    """Wraps the real loader of `transformers.quantizers.auto`: runs it, then registers bebert.

    The module's `__loader__` and `__spec__.loader` are set back to the real loader before it runs,
    so nothing afterwards (inspect, importlib.resources, reload) ever sees this wrapper.
    """

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)  # errors propagate exactly as without the hook
        _register_quietly()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _TransformersHook:
    """A meta-path finder that only ever answers for `transformers.quantizers.auto`, once."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        _uninstall(self)  # one shot, whatever happens next
        for finder in sys.meta_path:  # the spec the rest of the import system would have found
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # an unusual loader: leave it alone (explicit registration still works)
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _uninstall(hook) -> None:
    with _lock:
        try:
            sys.meta_path.remove(hook)
        except ValueError:
            pass


def register_when_transformers_loads() -> None:
    """Register now if transformers' quantizer registry is loaded, else as soon as it is. Never imports it."""
    if os.environ.get(_OPT_OUT, "").strip() not in ("", "0"):
        return
    if _TARGET in sys.modules:
        _register_quietly()
        return
    with _lock:
        if not any(isinstance(f, _TransformersHook) for f in sys.meta_path):
            sys.meta_path.insert(0, _TransformersHook())
