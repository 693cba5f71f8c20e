package maps

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/pontoon-net/pontoon/bpf"
)

// TestLayoutsMatchBTF holds every Go mirror against the struct the compiled
// object describes, member by member: a field added on one side only, a
// reordered field or a changed size fails here rather than corrupting the
// maps at run time.
func TestLayoutsMatchBTF(t *testing.T) {
	spec, err := bpf.LoadTcUplink()
	if err != nil {
		t.Fatal(err)
	}
	mirrors := []struct {
		mapName string
		key     any
		value   any
	}{
		{"bindings", BindingKey{}, BindingValue{}},
		{"ct", CTKey{}, CTValue{}},
		{"ct_new", CTKey{}, CTValue{}},
		{"hostaddrs", HostAddrKey{}, HostAddrValue{}},
		{"sockrev", SockRevKey{}, SockRevValue{}},
		{"config", nil, ConfigValue{}},
		{"stats", nil, Counter{}},
		{"networks", NetworkKey{}, NetworkValue{}},
		{"uplinks", nil, UplinkValue{}},
		{"uplinks6", nil, UplinkValue{}},
		{"snat", CTKey{}, SNATValue{}},
		{"endpoints", EndpointKey{}, EndpointValue{}},
		{"netns", NetnsKey{}, NetnsValue{}},
		{"frags", FragKey{}, FragValue{}},
		{"binding_stats", nil, bindingSlot{}},
		{"allow_from", AllowFromKey{}, AllowFromValue{}},
	}
	for _, m := range mirrors {
		ms, ok := spec.Maps[m.mapName]
		if !ok {
			t.Fatalf("object has no map %s", m.mapName)
		}
		if m.key != nil {
			compareStruct(t, m.mapName+" key", ms.Key, reflect.TypeOf(m.key))
		}
		compareStruct(t, m.mapName+" value", ms.Value, reflect.TypeOf(m.value))
	}

	stats := spec.Maps["stats"]
	if int(stats.MaxEntries) != len(StatNames) {
		t.Errorf("stats map has %d entries, StatNames lists %d: keep them in step with enum stat_index", stats.MaxEntries, len(StatNames))
	}
}

func compareStruct(t *testing.T, what string, typ btf.Type, goType reflect.Type) {
	t.Helper()
	st, ok := btf.UnderlyingType(typ).(*btf.Struct)
	if !ok {
		t.Errorf("%s: BTF type %v is not a struct", what, typ)
		return
	}
	if int(st.Size) != int(goType.Size()) {
		t.Errorf("%s: C struct %s is %d bytes, Go %s is %d", what, st.Name, st.Size, goType.Name(), goType.Size())
	}
	if len(st.Members) != goType.NumField() {
		t.Errorf("%s: C struct %s has %d members, Go %s has %d fields", what, st.Name, len(st.Members), goType.Name(), goType.NumField())
		return
	}
	for i, member := range st.Members {
		field := goType.Field(i)
		if normalize(member.Name) != normalize(field.Name) {
			t.Errorf("%s: member %d is %s in C but %s in Go", what, i, member.Name, field.Name)
		}
		if off := int(member.Offset.Bytes()); off != int(field.Offset) {
			t.Errorf("%s: %s at offset %d in C, %d in Go", what, member.Name, off, field.Offset)
		}
		size, err := btf.Sizeof(member.Type)
		if err != nil {
			t.Fatalf("%s: size of %s: %v", what, member.Name, err)
		}
		if size != int(field.Type.Size()) {
			t.Errorf("%s: %s is %d bytes in C, %d in Go", what, member.Name, size, field.Type.Size())
		}
	}
}

func normalize(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", ""))
}
