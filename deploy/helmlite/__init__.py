"""helmlite: a Go text/template engine for the subset of Go templates and Sprig the kedge chart
uses, so CI can render `deploy/helm/kedge` without a helm binary (see deploy/render.py).

Functions: include, toYaml, nindent, indent, quote, default, required, fail, printf, trunc,
trimSuffix, replace, contains, regexMatch, regexReplaceAll, dig, index, eq, not, or.
Actions: output, variables (:= and =), if / else if / else, range (lists, and maps in key
order, with one or two variables), with / else, define, template.
"""

from .execute import Engine
from .funcs import Struct, is_true
from .goyaml import go_print, to_yaml
from .parse import TemplateError

__all__ = ["Engine", "Struct", "TemplateError", "go_print", "is_true", "to_yaml"]
