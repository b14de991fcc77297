// Behavioural RAM for simulation harnesses only (never synthesized): one synchronous read
// port and one write port. The testbench loads `mem` in bulk through VPI.
module nep_sim_ram #(
    parameter WIDTH = 8,
    parameter DEPTH = 16,
    parameter AW = 4
) (
    input  wire             clk,
    input  wire [AW-1:0]    raddr,
    input  wire             ren,
    output reg  [WIDTH-1:0] rdata,
    input  wire [AW-1:0]    waddr,
    input  wire             we,
    input  wire [WIDTH-1:0] wdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (ren) rdata <= mem[raddr];
        if (we) mem[waddr] <= wdata;
    end
endmodule
