"""Before a manifest becomes reachable again (``tag``, ``push --subject``, ``trash restore``): its
whole closure must be there, or the new reference would dangle.

The closure is read by the graph's rules (nested indexes, configs, layers, blobs named inside
unknown JSON). Not required: foreign layers (a descriptor with ``urls``, fetched from there) and a
referrer's subject (a ``subject`` edge keeps nothing alive; a signature may be stored without its
image). A manifest in the closure that cannot be parsed counts as missing (its children are
unknown), and so does a blob whose size differs from its descriptor (a truncated upload under its
digest name).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ocigc.digest import Digest
from ocigc.errors import IntegrityError
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import Layout
from ocigc.oci.descriptor import Descriptor
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, pmap


def closure_problems(layout: Layout, roots: Iterable[Descriptor], jobs: int = DEFAULT_JOBS) -> list[str]:
    """One line per missing blob, blob of the wrong size, or unparsable manifest of the closure of
    ``roots`` (empty: complete)."""
    descs = list(roots)
    if not descs:
        return []
    doc = {"schemaVersion": 2, "manifests": [d.to_json() for d in descs]}
    index = Index.parse(json.dumps(doc).encode())
    graph = RefGraph.build(layout, index, jobs)
    reach = graph.reachable(index.root_digests())
    problems: list[str] = []
    for d, err in sorted(graph.errors(reach).items()):
        if graph.node(d)["present"] is not False:
            problems.append(err)
    need = sorted(reach - graph.foreign(reach))
    for d, size in zip(need, pmap(_size, [(layout, d) for d in need], jobs), strict=True):
        parents = ", ".join(p.short for p, _ in graph.parents(d)) or "it"
        if size is None:
            what = "manifest" if graph.is_manifest(d) or graph.node(d)["root"] else "blob"
            problems.append(f"{layout.where(d.blob_path())}: {what} is missing (referenced by {parents})")
            continue
        wrong = sorted(s for s in graph.node(d)["sizes"] if s >= 0 and s != size)
        if wrong:  # a truncated blob under its digest name is as good as missing
            problems.append(f"{layout.where(d.blob_path())}: has {size} bytes, but {parents} says "
                            f"{', '.join(map(str, wrong))}")
    return problems


def _size(item: tuple[Layout, Digest]) -> int | None:
    layout, d = item
    try:
        st = layout.stat_blob(d)
    except OSError:
        return None
    return None if st is None else st.size


def require_closure(layout: Layout, desc: Descriptor, action: str, jobs: int = DEFAULT_JOBS) -> None:
    """IntegrityError (exit 4) naming the first problem when the closure of ``desc`` is incomplete."""
    problems = closure_problems(layout, [desc], jobs)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"{problems[0]}{more}; refusing to {action} {desc.digest.short}: the closure of "
                             "the manifest is incomplete (nothing changed)")
