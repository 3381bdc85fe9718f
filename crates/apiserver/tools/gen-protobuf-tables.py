#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf/tables.rs: the descriptor tables that drive
kcore's JSON <-> protobuf transcoding of Kubernetes objects.

Inputs are upstream's own sources, checked out side by side under one directory:

    ROOT/api                       github.com/kubernetes/api
    ROOT/apimachinery              github.com/kubernetes/apimachinery
    ROOT/apiextensions-apiserver   github.com/kubernetes/apiextensions-apiserver

From each package's `generated.proto` it takes the messages, field numbers and proto types;
from the same package's Go sources (`types.go` and friends) it takes what the .proto does not
say: each field's JSON name (`json:"x-kubernetes-list-type"` where the proto says
`xKubernetesListType`), `omitempty`, whether the Go field is a pointer (a pointer set to zero
is meaningful: `replicas: 0`), and embedded structs whose fields JSON inlines (`Volume`'s
`VolumeSource`). `register.go`'s `GroupName` gives each package's API group; every struct
that embeds `metav1.TypeMeta` and has a proto message is a kind.

Usage (the output is committed; CI does not run this):

    mkdir -p /tmp/k && cd /tmp/k
    for r in api apimachinery apiextensions-apiserver; do
      git clone --depth 1 https://github.com/kubernetes/$r; done
    python3 crates/apiserver/tools/gen-protobuf-tables.py /tmp/k > crates/apiserver/src/protobuf/tables.rs
    cargo fmt --all
"""

import os
import re
import subprocess
import sys

SCALARS = {"string", "bytes", "int32", "int64", "bool", "double"}

# Messages whose JSON form is not an object of their fields (custom MarshalJSON upstream).
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSON": "RawJson",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "Quantity",
}
for v in ("v1", "v1beta1"):
    p = f"k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.{v}."
    SPECIAL[p + "JSONSchemaPropsOrArray"] = "SchemaOrArray"
    SPECIAL[p + "JSONSchemaPropsOrBool"] = "SchemaOrBool"
    SPECIAL[p + "JSONSchemaPropsOrStringArray"] = "SchemaOrStringArray"

SKIP_DIRS = ("testapigroup", "testdata")


def proto_files(root):
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if "generated.proto" in files:
            yield dirpath


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_proto(path):
    text = strip_comments(open(path).read())
    pkg = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    messages = {}
    for m in re.finditer(r"message (\w+) \{(.*?)\n\}", text, re.S):
        fields = []
        for line in m.group(2).splitlines():
            line = line.strip()
            f = re.match(r"(optional|repeated|required) ([\w.]+) (\w+) = (\d+)", line)
            if f:
                fields.append(
                    {"label": "rep" if f.group(1) == "repeated" else "opt", "type": f.group(2),
                     "name": f.group(3), "num": int(f.group(4))})
                continue
            f = re.match(r"map<(\w+), ?([\w.]+)> (\w+) = (\d+)", line)
            if f:
                fields.append({"label": "map", "key": f.group(1), "type": f.group(2),
                               "name": f.group(3), "num": int(f.group(4))})
                continue
            if line and line not in ("{", "}"):
                raise SystemExit(f"{path}: cannot parse {line!r}")
        messages[m.group(1)] = fields
    return pkg, messages


def parse_go(dirpath):
    """Struct name -> {proto field number: info}, the set of `[]string` named types,
    the kinds (structs embedding TypeMeta) and the package's group name."""
    structs, string_lists, kinds, group = {}, set(), set(), None
    for fn in sorted(os.listdir(dirpath)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_generated"):
            continue
        if fn in ("generated.pb.go",):
            continue
        text = open(os.path.join(dirpath, fn)).read()
        g = re.search(r'^const GroupName = "([^"]*)"', text, re.M)
        if g:
            group = g.group(1)
        for m in re.finditer(r"^type (\w+) \[\](\w+)\s*$", text, re.M):
            if m.group(2) == "string":
                string_lists.add(m.group(1))
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.S | re.M):
            name, body = m.group(1), m.group(2)
            fields = {}
            for line in body.splitlines():
                line = line.split("//")[0] if "`" not in line else line
                if "`" not in line:
                    if re.match(r"\s*metav1\.TypeMeta\s*$|\s*TypeMeta\s*$", line):
                        kinds.add(name)
                    continue
                head, tags = line.split("`")[0].split(), line.split("`")[1]
                if head in (["metav1.TypeMeta"], ["TypeMeta"]):
                    kinds.add(name)
                pb = re.search(r'protobuf:"(\w+),(\d+),(opt|rep|req)', tags)
                if not pb:
                    continue
                js = re.search(r'json:"([^"]*)"', tags)
                jname, opts = "", []
                if js:
                    parts = js.group(1).split(",")
                    jname, opts = parts[0], parts[1:]
                embedded = len(head) == 1
                gotype = head[-1]
                fields[int(pb.group(2))] = {
                    "json": jname if jname != "-" else None,
                    "omitempty": "omitempty" in opts,
                    "ptr": gotype.startswith("*"),
                    "inline": embedded and jname == "",
                    "gotype": gotype,
                }
            structs[name] = fields
    return structs, string_lists, kinds, group


def resolve(pkg, t):
    if t in SCALARS:
        return t
    if t.startswith("."):
        return t[1:]
    if "." in t:
        return t
    return pkg + "." + t


def main():
    root = sys.argv[1]
    all_msgs = []  # (full name, pkg, short, fields, gostructs, string_lists)
    kinds = []  # (apiVersion, kind, full name)
    sources = []
    for top in ("apimachinery", "api", "apiextensions-apiserver"):
        base = os.path.join(root, top)
        try:
            rev = subprocess.run(["git", "-C", base, "rev-parse", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            rev = "unknown"
        sources.append(f"k8s.io/{top}@{rev}")
        for d in proto_files(base):
            pkg, messages = parse_proto(os.path.join(d, "generated.proto"))
            structs, string_lists, kind_structs, group = parse_go(d)
            version = os.path.basename(d)
            for short, fields in messages.items():
                full = pkg + "." + short
                all_msgs.append((full, pkg, short, fields, structs.get(short, {}),
                                 short in string_lists))
                if short in kind_structs and group is not None:
                    gv = f"{group}/{version}" if group else version
                    kinds.append((gv, short, full))
                    if group == "meta.k8s.io":
                        kinds.append((version, short, full))
    index = {m[0]: i for i, m in enumerate(all_msgs)}
    out = []
    w = out.append
    w("// @generated by crates/apiserver/tools/gen-protobuf-tables.py from upstream's")
    w("// generated.proto and Go types; do not edit by hand. Sources:")
    for s in sources:
        w(f"//   {s}")
    w("")
    w("use super::transcode::{Field, Label, Message, Special, Ty, INLINE, OMITEMPTY, PTR};")
    w("")
    w("/// Every message of the Kubernetes API, referenced by index from [`Ty::Msg`].")
    w("pub(super) static MESSAGES: &[Message] = &[")

    def ty(pkg, t):
        r = resolve(pkg, t)
        if r in SCALARS:
            return {"string": "Ty::Str", "bytes": "Ty::Bytes", "int32": "Ty::I32",
                    "int64": "Ty::I64", "bool": "Ty::Bool", "double": "Ty::F64",
                    }[r]
        if r not in index:
            raise SystemExit(f"unknown message {r}")
        return f"Ty::Msg({index[r]})"

    for full, pkg, short, fields, go, string_list in all_msgs:
        special = SPECIAL.get(full, "StringList" if string_list else "None")
        w(f'    Message {{ name: "{full}", special: Special::{special}, fields: &[')
        for f in fields:
            info = go.get(f["num"], {})
            json_name = info.get("json") or f["name"]
            flags = []
            if info.get("ptr"):
                flags.append("PTR")
            if info.get("omitempty"):
                flags.append("OMITEMPTY")
            if info.get("inline"):
                flags.append("INLINE")
                json_name = ""
            if f["label"] == "map":
                if f["key"] != "string":
                    raise SystemExit(f"{full}.{f['name']}: map key {f['key']}")
                label = f"Label::Map({ty(pkg, f['type'])})"
                t = "Ty::Str"
            else:
                label = "Label::Rep" if f["label"] == "rep" else "Label::Opt"
                t = ty(pkg, f["type"])
            w(f'        Field {{ num: {f["num"]}, json: "{json_name}", ty: {t}, label: {label}, '
              f'flags: {"|".join(flags) or "0"} }},')
        w("    ]},")
    w("];")
    w("")
    w("/// `(apiVersion, kind)` of every kind, sorted, with its message index.")
    w("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
    seen = set()
    for gv, kind, full in sorted(kinds):
        if (gv, kind) in seen:
            continue
        seen.add((gv, kind))
        w(f'    ("{gv}", "{kind}", {index[full]}),')
    w("];")
    print("\n".join(out))


if __name__ == "__main__":
    main()
