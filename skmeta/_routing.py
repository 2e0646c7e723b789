"""``prefix__name`` parameters routed to torch parts, as skorch routes them."""


class RoutedParamsMixin:
    """Accept and expose ``<prefix>__<name>`` parameters like regular ones.

    skorch configures a module with ``module__<name>`` arguments; learners
    that build skorch cores take them the same way. Subclasses list their
    prefixes in ``_routed_prefixes`` and call ``_store_routed(kwargs)`` from
    ``__init__``. ``get_params``, ``set_params`` and hence ``clone`` and
    ``GridSearchCV`` then treat routed parameters like any other.
    """

    _routed_prefixes = ("module__",)

    def _store_routed(self, kwargs):
        for key, value in kwargs.items():
            self._check_routed(key)
            setattr(self, key, value)

    def _check_routed(self, key):
        if not key.startswith(self._routed_prefixes):
            raise TypeError(
                f"{type(self).__name__} got an unexpected keyword argument "
                f"{key!r}; routed parameters must start with one of "
                f"{', '.join(self._routed_prefixes)}.")

    def _routed_params(self, prefix=None, strip=False):
        """The routed parameters (those of one ``prefix``), with their prefix
        or, if ``strip``, without it."""
        prefixes = self._routed_prefixes if prefix is None else (prefix,)
        return {key[len(prefix):] if strip else key: value
                for key, value in vars(self).items() if key.startswith(prefixes)}

    def get_params(self, deep=True):
        return {**super().get_params(deep=deep), **self._routed_params()}

    def set_params(self, **params):
        routed = {k: params.pop(k) for k in list(params)
                  if k.startswith(self._routed_prefixes)}
        for key, value in routed.items():
            setattr(self, key, value)
        return super().set_params(**params)
