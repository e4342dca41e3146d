package sshx

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Agent is a connection to a running ssh-agent (SSH_AUTH_SOCK). Its
// signers ask the agent for every signature, so it stays open while
// connections that use them are being made.
type Agent struct {
	conn   net.Conn
	client agent.ExtendedAgent
}

// DialAgent connects to the ssh-agent listening on socket.
func DialAgent(socket string) (*Agent, error) {
	if socket == "" {
		return nil, errors.New("ssh-agent: no socket (SSH_AUTH_SOCK is not set)")
	}
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("ssh-agent at %s: %w", socket, err)
	}
	return &Agent{conn: conn, client: agent.NewClient(conn)}, nil
}

// Signers are the agent's keys, in the agent's order.
func (a *Agent) Signers() ([]ssh.Signer, error) {
	s, err := a.client.Signers()
	if err != nil {
		return nil, fmt.Errorf("ssh-agent: list keys: %w", err)
	}
	return s, nil
}

// Close ends the connection to the agent.
func (a *Agent) Close() error { return a.conn.Close() }
