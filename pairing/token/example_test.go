package token_test

import (
	"fmt"

	"github.com/cairnbackup/cairn/pairing/token"
)

// Printing a token never shows its secret; Reveal does, for agent.conf.
func ExampleAgentToken() {
	tok, err := token.ParseAgentToken("42|Zq8rT3vLw0pXk2NcYh7sGm4bFd9jUa1eRt5oPi6yQxWz\n")
	if err != nil {
		panic(err)
	}
	fmt.Println(tok)
	fmt.Printf("%#v\n", tok)
	fmt.Println(tok.Reveal())
	// Output:
	// 42|<redacted>
	// token.AgentToken{ID:42, Secret:"<redacted>"}
	// 42|Zq8rT3vLw0pXk2NcYh7sGm4bFd9jUa1eRt5oPi6yQxWz
}

func ExampleParseAgentToken_error() {
	_, err := token.ParseAgentToken("42|Zq8rT3vLw0pX")
	fmt.Println(err)
	// Output:
	// token: malformed agent token: secret is 12 characters, want at least 40
}

// The appliance stores only the hash and checks presented secrets against it.
func ExampleVerifySecret() {
	tok, err := token.NewAgentToken(7)
	if err != nil {
		panic(err)
	}
	stored := tok.Hash()
	fmt.Println(token.VerifySecret(stored, tok.Secret))
	fmt.Println(token.VerifySecret(stored, "Zq8rT3vLw0pXk2NcYh7sGm4bFd9jUa1eRt5oPi6yQxWz"))
	// Output:
	// true
	// false
}

func ExampleSetupToken() {
	tok, err := token.ParseSetupToken("cairn-setup-AbCdEf012345-Zq8rT3vLw0pXk2NcYh7sGm4bFd9jUa1eRt5oPi6y")
	if err != nil {
		panic(err)
	}
	fmt.Println(tok)
	// Output:
	// cairn-setup-AbCdEf012345-<redacted>
}
