package vss

import (
	"strconv"
	"strings"
)

// Banner is the header vssadmin prints before its output; Format starts
// with it.
const Banner = "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool\n" +
	"(C) Copyright 2001-2013 Microsoft Corp.\n"

// Format renders writers in the layout of "vssadmin list writers": the
// Banner, a blank line, then one block per writer, each followed by a
// blank line, with "\n" line endings (replace them with "\r\n" for
// byte-exact Windows output). An empty State is written as
// StateText(StateCode) and an empty LastError as "No error", which keeps
// fixtures short. Other fields are written as given: Parse(Format(ws))
// returns ws for any writers Parse returned.
func Format(ws []Writer) string {
	var b strings.Builder
	b.Grow(len(Banner) + 1 + 200*len(ws))
	b.WriteString(Banner)
	b.WriteString("\n")
	for _, w := range ws {
		state, lastErr := w.State, w.LastError
		if state == "" {
			state = StateText(w.StateCode)
		}
		if lastErr == "" {
			lastErr = LastErrorNone
		}
		b.WriteString("Writer name: '")
		b.WriteString(w.Name)
		b.WriteString("'\n   Writer Id: ")
		b.WriteString(w.ID)
		b.WriteString("\n   Writer Instance Id: ")
		b.WriteString(w.InstanceID)
		b.WriteString("\n   State: [")
		b.WriteString(strconv.Itoa(w.StateCode))
		b.WriteString("] ")
		b.WriteString(state)
		b.WriteString("\n   Last error: ")
		b.WriteString(lastErr)
		b.WriteString("\n\n")
	}
	return b.String()
}
