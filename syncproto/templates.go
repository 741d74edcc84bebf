package syncproto

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

//go:embed templates/*.json
var formTemplateFS embed.FS

// Templates returns the form templates shipped with fieldsync (household
// survey, dilapidated-house retrofit inspection, water-cellar progress,
// dropout follow-up), parsed from the embedded templates/*.json, each with
// Version 1, sorted by ID. Every call returns fresh copies that the caller
// may change.
func Templates() []FormDef {
	paths, err := fs.Glob(formTemplateFS, "templates/*.json")
	if err != nil {
		panic(fmt.Sprintf("syncproto: form templates: %v", err))
	}
	out := make([]FormDef, 0, len(paths))
	for _, p := range paths {
		data, err := formTemplateFS.ReadFile(p)
		if err != nil {
			panic(fmt.Sprintf("syncproto: form template %s: %v", p, err))
		}
		f, err := ParseFormDef(data)
		if err != nil {
			// The templates are tested; this is a build defect.
			panic(fmt.Sprintf("syncproto: form template %s: %v", p, err))
		}
		f.Version = 1
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b FormDef) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Template returns the shipped template with the given ID.
func Template(id string) (FormDef, bool) {
	for _, f := range Templates() {
		if f.ID == id {
			return f, true
		}
	}
	return FormDef{}, false
}
